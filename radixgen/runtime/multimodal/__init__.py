"""Images for LLaVA-style models: reading and checking image inputs, preprocessing them as the
model's processor does, the content-hash placeholder ids the radix cache sees, and the bounded
cache of vision-encoder outputs."""

from radixgen.runtime.multimodal.image import ImageInput, is_image_token
from radixgen.runtime.multimodal.limits import ImageLimits

__all__ = ["ImageInput", "ImageLimits", "is_image_token"]
