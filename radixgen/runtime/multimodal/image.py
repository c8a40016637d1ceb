"""`ImageInput`: one preprocessed image and the id its placeholder tokens carry.

Placeholder ids. An image becomes `tokens_per_image` prompt positions. Their ids in `fill_ids`
(what the radix tree keys on) are one negative number per image, derived from a SHA-256 of the
image's encoded bytes (SGLang's `pad_input_ids` idea): equal images give equal ids, so their KV
is shared; different images give different ids, so the tree never hands one image's KV to
another. Negative ids never equal a real token (those are >= 0, and callers' `input_ids` are
validated >= 0), and every place that would read an id as a vocabulary entry (the embedding,
penalties, n-gram drafts, detokenization) treats `id < 0` as "an image position" instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

PAD_ID_BITS = 62  # -(1 .. 2**62): fits int64 with room, collisions need ~2**31 images


def is_image_token(token_id: int) -> bool:
    return token_id < 0


def pad_id_of(digest: bytes) -> int:
    """The negative placeholder id of an image whose encoded bytes hash to `digest`."""
    return -(1 + int.from_bytes(digest[:8], "big") % (1 << PAD_ID_BITS))


@dataclass(frozen=True, eq=False)
class ImageInput:
    pad_id: int  # < 0: the id of each of this image's placeholder tokens
    digest: str  # hex SHA-256 of the encoded image bytes
    pixel_values: torch.Tensor  # [C, H, W] float32, preprocessed for the vision tower

    @classmethod
    def of(cls, encoded: bytes, pixel_values: torch.Tensor) -> ImageInput:
        digest = hashlib.sha256(encoded).digest()
        return cls(pad_id_of(digest), digest.hex(), pixel_values)


@dataclass(frozen=True)
class PromptImage:
    """An image inside one request's prompt: positions [offset, offset + length)."""

    image: ImageInput
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length
