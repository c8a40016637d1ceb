"""What one request may send: image count, encoded bytes and pixels (EngineConfig's values)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageLimits:
    max_images: int
    max_bytes: int
    max_pixels: int
