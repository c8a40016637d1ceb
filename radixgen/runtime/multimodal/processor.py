"""Image preprocessing as a LLaVA-1.5 / CLIP processor does it, with Pillow and numpy:
RGB, (LlavaImageProcessor with `do_pad`: pad to a square in the mean colour, as the original
LLaVA's "expand to square"), resize the shortest edge (bicubic by default), center crop, rescale
to [0, 1], normalise by the mean and std. The settings come from the model directory's
`preprocessor_config.json` (transformers' `CLIPImageProcessor` / `LlavaImageProcessor`
fields); without one, CLIP's defaults at the tower's size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = 3  # PIL's (and transformers' PILImageResampling) code


@dataclass(frozen=True)
class ImageProcessor:
    pad_square: tuple[int, ...] | None  # pad to a square in this colour first; None: no pad
    shortest_edge: int | None  # resize so the short side is this (None: to `size_hw`)
    size_hw: tuple[int, int] | None  # resize to exactly (height, width)
    crop_hw: tuple[int, int] | None  # center crop to (height, width); None: no crop
    resample: int
    rescale_factor: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    @classmethod
    def for_model(cls, directory: Path | None, image_size: int) -> ImageProcessor:
        """The directory's preprocessor_config.json, else CLIP's defaults for `image_size`."""
        path = None if directory is None else Path(directory) / "preprocessor_config.json"
        cfg = json.loads(path.read_text()) if path is not None and path.exists() else {}
        size = cfg.get("size", {"shortest_edge": image_size})
        if isinstance(size, int):
            size = {"shortest_edge": size}
        crop = cfg.get("crop_size", {"height": image_size, "width": image_size})
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        do_resize, do_crop = cfg.get("do_resize", True), cfg.get("do_center_crop", True)
        mean = tuple(cfg.get("image_mean", CLIP_MEAN))
        pads = cfg.get("image_processor_type") == "LlavaImageProcessor" and cfg.get("do_pad")
        return cls(
            pad_square=tuple(int(m * 255) for m in mean) if pads else None,
            shortest_edge=size.get("shortest_edge") if do_resize else None,
            size_hw=(size["height"], size["width"]) if do_resize and "height" in size else None,
            crop_hw=(crop["height"], crop["width"]) if do_crop else None,
            resample=int(cfg.get("resample", BICUBIC)),
            rescale_factor=cfg.get("rescale_factor", 1 / 255)
            if cfg.get("do_rescale", True)
            else None,
            mean=tuple(cfg.get("image_mean", CLIP_MEAN)) if cfg.get("do_normalize", True) else None,
            std=tuple(cfg.get("image_std", CLIP_STD)) if cfg.get("do_normalize", True) else None,
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """An RGB picture -> pixel values [3, H, W] float32."""
        image = image.convert("RGB")
        if self.pad_square is not None and image.width != image.height:
            side = max(image.size)
            square = Image.new("RGB", (side, side), self.pad_square)
            square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
            image = square
        if self.shortest_edge is not None:
            image = image.resize(_shortest_edge_size(image.size, self.shortest_edge), self.resample)
        elif self.size_hw is not None:
            image = image.resize((self.size_hw[1], self.size_hw[0]), self.resample)
        pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)  # [3, H, W]
        if self.crop_hw is not None:
            pixels = _center_crop(pixels, self.crop_hw)
        values = pixels.astype(np.float32)
        if self.rescale_factor is not None:  # in float64, then float32 (as transformers)
            values = (pixels.astype(np.float64) * self.rescale_factor).astype(np.float32)
        if self.mean is not None:
            mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
            std = np.asarray(self.std, dtype=np.float32)[:, None, None]
            values = (values - mean) / std
        return torch.from_numpy(np.ascontiguousarray(values))


def _shortest_edge_size(size: tuple[int, int], edge: int) -> tuple[int, int]:
    """(width, height) with the short side `edge` and the long side scaled down to an int."""
    width, height = size
    if width <= height:
        return edge, int(edge * height / width)
    return int(edge * width / height), edge


def _center_crop(pixels: np.ndarray, crop_hw: tuple[int, int]) -> np.ndarray:
    """[C, H, W] -> [C, h, w] from the center; a side shorter than the crop is zero-padded."""
    _, H, W = pixels.shape
    h, w = crop_hw
    if h > H or w > W:
        padded = np.zeros((pixels.shape[0], max(h, H), max(w, W)), dtype=pixels.dtype)
        top, left = (max(h, H) - H) // 2, (max(w, W) - W) // 2
        padded[:, top : top + H, left : left + W] = pixels
        pixels, H, W = padded, padded.shape[1], padded.shape[2]
    top, left = (H - h) // 2, (W - w) // 2
    return pixels[:, top : top + h, left : left + w]
