"""VisionCache: one encoder call per batch of missing images, each image encoded once however
often it appears, least recently used entries dropped past the bound."""

from __future__ import annotations

import torch

from radixgen.runtime.multimodal.encoder_cache import VisionCache
from radixgen.runtime.multimodal.image import ImageInput


def _image(k: int) -> ImageInput:
    return ImageInput.of(bytes([k]), torch.full((3, 2, 2), float(k)))


def test_encodes_missing_images_once_and_keeps_the_recent_ones():
    calls: list[int] = []

    def encode(pixels: torch.Tensor) -> torch.Tensor:  # [N, 3, 2, 2] -> [N, 4, 1]
        calls.append(pixels.shape[0])
        return pixels[:, 0].reshape(pixels.shape[0], 4, 1) * 10

    cache = VisionCache(capacity=2)
    a, b, c = _image(1), _image(2), _image(3)
    out = cache.features([a, b, a], encode)
    assert calls == [2] and cache.encoded == 2
    assert torch.equal(out[a.pad_id], torch.full((4, 1), 10.0))
    cache.features([a], encode)  # a is now the most recent
    assert calls == [2] and cache.hits == 1
    cache.features([c], encode)  # over capacity: b (least recent) goes
    assert calls == [2, 1] and len(cache) == 2
    cache.features([a, b], encode)
    assert calls == [2, 1, 1]  # a was kept, b re-encoded


def test_placeholder_ids_are_negative_and_follow_the_bytes():
    assert _image(1).pad_id < 0 and _image(1).pad_id == _image(1).pad_id
    assert _image(1).pad_id != _image(2).pad_id
