"""Images in chat messages (OpenAI `image_url` content parts) for multimodal models.

Each image part's URL becomes one of the request's `image_data` entries, in order; only data
URLs and local file paths are accepted (a remote http(s) URL is a 400 naming the part, and
nothing is ever fetched). Where the image goes in the prompt depends on the model's chat
template:

- a template that reads content parts (it tests an item's `type`, as llava-hf's does) gets the
  message as parts: `{"type": "image"}` for each image, `{"type": "text", "text": ...}`;
- any other template gets text, with the model's image token (and a newline, as LLaVA's prompts
  put it) at each image's place.

Text-only models keep getting plain text for every message, and refuse image parts.
"""

from __future__ import annotations

from typing import Any

from radixgen.runtime.engine import Engine
from radixgen.server.errors import APIError
from radixgen.server.protocol import ChatMessage, ImagePart

REMOTE_SCHEMES = ("http://", "https://", "ftp://")


def template_takes_parts(engine: Engine) -> bool:
    """Whether the (multimodal) model's chat template renders content parts itself."""
    template = getattr(engine.tokenizer, "chat_template", None) or ""
    return engine.image_token is not None and ("'type'" in template or '"type"' in template)


def message_content(
    engine: Engine, message: ChatMessage, index: int, images: list[str], as_parts: bool
) -> str | list[dict[str, Any]] | None:
    """The message's content for the chat template; its images' URLs go to `images`."""
    content = message.content
    if not isinstance(content, list):
        if as_parts and content is not None:
            return [{"type": "text", "text": content}]
        return content
    pieces: list[str] = []
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if not isinstance(part, ImagePart):
            pieces.append(part.text)
            parts.append({"type": "text", "text": part.text})
            continue
        images.append(_checked_url(engine, part, f"messages.{index}.content.{j}.image_url.url"))
        pieces.append(engine.image_token + "\n")
        parts.append({"type": "image"})
    return parts if as_parts else "".join(pieces)


def _checked_url(engine: Engine, part: ImagePart, param: str) -> str:
    if engine.image_token is None:
        raise APIError(400, "this model takes no images", param)
    url = part.image_url.url
    if url[:16].lower().startswith(REMOTE_SCHEMES):
        raise APIError(
            400,
            "remote image URLs are not fetched: send a data URL (data:image/png;base64,...) "
            "or a local file path",
            param,
        )
    return url
