"""Images in chat messages (OpenAI `image_url` content parts) for multimodal models.

Each image part becomes the model's image token (and a newline, as LLaVA's prompts put it) at
its place in the message text, and its URL one of the request's `image_data` entries, in order.
Only data URLs and local file paths are accepted: a remote http(s) URL is a 400 naming the part,
and nothing is ever fetched.
"""

from __future__ import annotations

from radixgen.runtime.engine import Engine
from radixgen.server.errors import APIError
from radixgen.server.protocol import ChatMessage, ImagePart

REMOTE_SCHEMES = ("http://", "https://", "ftp://")


def message_text(engine: Engine, message: ChatMessage, index: int, images: list[str]) -> str | None:
    """The message's content as text; its images' URLs are appended to `images`."""
    content = message.content
    if not isinstance(content, list):
        return content
    pieces = []
    for j, part in enumerate(content):
        if not isinstance(part, ImagePart):
            pieces.append(part.text)
            continue
        param = f"messages.{index}.content.{j}.image_url.url"
        token = engine.image_token
        if token is None:
            raise APIError(400, "this model takes no images", param)
        url = part.image_url.url
        if url[:16].lower().startswith(REMOTE_SCHEMES):
            raise APIError(
                400,
                "remote image URLs are not fetched: send a data URL "
                "(data:image/png;base64,...) or a local file path",
                param,
            )
        images.append(url)
        pieces.append(token + "\n")
    return "".join(pieces)
