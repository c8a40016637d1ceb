"""Read one image input into checked bytes and a decoded RGB picture, or fail naming why.

Accepted sources: a `data:` URL with base64 content, bare base64, a `file://` URL or a local
file path. Nothing is fetched over the network: an http(s) URL is refused. Every failure is an
`InvalidRequestError` for `param` whose message says which image (1-based) and what was wrong;
the size limits are checked before the picture is decoded (bytes first, then the dimensions
read from the header), so an oversized image costs no decoding.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

from radixgen.runtime.multimodal.limits import ImageLimits
from radixgen.runtime.validation import InvalidRequestError

REMOTE_SCHEMES = ("http://", "https://", "ftp://")
MAX_PATH_CHARS = 4096


def read_image_bytes(source: str, which: str, limits: ImageLimits, param: str) -> bytes:
    """The encoded bytes of one image input (`which`: how messages name it, e.g. "image 2")."""
    if not isinstance(source, str) or not source:
        raise InvalidRequestError(f"{which} is empty", param)
    lowered = source[:16].lower()
    if lowered.startswith(REMOTE_SCHEMES):
        raise InvalidRequestError(
            f"{which} is a remote URL; images are never fetched over the network: send a data "
            "URL (data:image/png;base64,...), base64 or a local file path",
            param,
        )
    if lowered.startswith("data:"):
        header, sep, payload = source.partition(",")
        if not sep or not header.endswith(";base64"):
            raise InvalidRequestError(
                f"{which}: a data URL must be base64 (data:...;base64,)", param
            )
        return _b64decode(payload, which, limits, param)
    if lowered.startswith("file://"):
        return _read_file(unquote(urlparse(source).path), which, limits, param)
    if len(source) <= MAX_PATH_CHARS and os.path.isfile(source):
        return _read_file(source, which, limits, param)
    return _b64decode(source, which, limits, param)


def _b64decode(payload: str, which: str, limits: ImageLimits, param: str) -> bytes:
    if len(payload) > (limits.max_bytes + 2) // 3 * 4 + 4:  # before decoding: no huge buffer
        raise _too_large(which, len(payload) * 3 // 4, limits, param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(
            f"{which} is neither a data URL, valid base64 nor an existing file path", param
        ) from None
    if len(data) > limits.max_bytes:
        raise _too_large(which, len(data), limits, param)
    return data


def _read_file(path: str, which: str, limits: ImageLimits, param: str) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > limits.max_bytes:
            raise _too_large(which, size, limits, param)
        with open(path, "rb") as f:
            return f.read(limits.max_bytes + 1)
    except OSError:
        raise InvalidRequestError(f"{which}: no readable file at that path", param) from None


def _too_large(which: str, size: int, limits: ImageLimits, param: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{which} is {size} bytes; the limit is {limits.max_bytes} bytes", param
    )


def decode_image(data: bytes, which: str, limits: ImageLimits, param: str) -> Image.Image:
    """The RGB picture of encoded bytes; corrupt or oversized (pixels) -> 400."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if width * height > limits.max_pixels:
                raise InvalidRequestError(
                    f"{which} is {width}x{height} = {width * height} pixels; the limit is "
                    f"{limits.max_pixels}",
                    param,
                )
            if width < 1 or height < 1:
                raise InvalidRequestError(f"{which} has no pixels", param)
            opened.load()
            return opened.convert("RGB")
    except InvalidRequestError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InvalidRequestError(
            f"{which} is not a readable image (corrupt or unknown format)", param
        ) from None
