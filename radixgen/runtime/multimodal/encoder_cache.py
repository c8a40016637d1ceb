"""`VisionCache`: vision-encoder outputs by image, least recently used dropped past a bound.

A prompt chunked across an image's placeholder run, a batch holding the same image twice and a
later request repeating an image all encode it once (while it stays cached). Entries are keyed
by the image's placeholder id, which is its content hash.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch

from radixgen.runtime.multimodal.image import ImageInput


class VisionCache:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.encoded = 0  # images the encoder ran on

    def __len__(self) -> int:
        return len(self._entries)

    def features(
        self,
        images: Sequence[ImageInput],
        encode: Callable[[torch.Tensor], torch.Tensor],  # [N, C, H, W] -> [N, tokens, hidden]
    ) -> dict[int, torch.Tensor]:
        """pad id -> [tokens, hidden] for every image, encoding the missing ones in one call."""
        found: dict[int, torch.Tensor] = {}
        missing: dict[int, ImageInput] = {}
        for image in images:
            entry = self._entries.get(image.pad_id)
            if entry is not None:
                self._entries.move_to_end(image.pad_id)
                found[image.pad_id] = entry
                self.hits += 1
            else:
                missing[image.pad_id] = image  # once per image, however often it appears
        if missing:
            batch = torch.stack([image.pixel_values for image in missing.values()])
            out = encode(batch)
            self.encoded += len(missing)
            for pad_id, rows in zip(missing, out, strict=True):
                rows = rows.clone()  # its own storage: dropping it frees it
                found[pad_id] = rows
                self._entries[pad_id] = rows
                self._entries.move_to_end(pad_id)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return found
