"""`ImagePrompter`: a prompt's image token ids and image sources -> the padded prompt the
scheduler runs (each image token becomes `tokens_per_image` copies of the image's negative
placeholder id) and where each image sits in it.

Images are read, checked against `ImageLimits` and preprocessed here, on the caller's thread
(the engine tokenizes there too), so a bad image fails its own request with a 400 before
anything reaches the scheduler.
"""

from __future__ import annotations

from pathlib import Path

from radixgen.runtime.config import VisionConfig
from radixgen.runtime.multimodal.image import ImageInput, PromptImage
from radixgen.runtime.multimodal.limits import ImageLimits
from radixgen.runtime.multimodal.loading import decode_image, read_image_bytes
from radixgen.runtime.multimodal.processor import ImageProcessor
from radixgen.runtime.validation import InvalidRequestError

PARAM = "image_data"


class ImagePrompter:
    def __init__(self, vision: VisionConfig, model_dir: Path | None, limits: ImageLimits):
        self.vision = vision
        self.limits = limits
        self.processor = ImageProcessor.for_model(model_dir, vision.image_size)

    def load(self, sources: list[str]) -> list[ImageInput]:
        """Read, check and preprocess each source (equal sources are decoded once)."""
        if len(sources) > self.limits.max_images:
            raise InvalidRequestError(
                f"a prompt takes at most {self.limits.max_images} images, got {len(sources)}",
                PARAM,
            )
        done: dict[str, ImageInput] = {}
        images = []
        for i, source in enumerate(sources):
            if source not in done:
                which = f"image {i + 1}"
                data = read_image_bytes(source, which, self.limits, PARAM)
                picture = decode_image(data, which, self.limits, PARAM)
                done[source] = ImageInput.of(data, self.processor(picture))
            images.append(done[source])
        return images

    def expand(
        self, ids: list[int], images: list[ImageInput]
    ) -> tuple[list[int], tuple[PromptImage, ...]]:
        """Replace the i-th image token of `ids` by image i's placeholder run."""
        token = self.vision.image_token_id
        count = sum(1 for t in ids if t == token)
        if count != len(images):
            raise InvalidRequestError(
                f"the prompt has {count} image tokens but {len(images)} images were given "
                "(put one image token where each image goes)",
                PARAM,
            )
        if not images:
            return ids, ()
        width = self.vision.tokens_per_image
        out: list[int] = []
        placed: list[PromptImage] = []
        for t in ids:
            if t != token:
                out.append(t)
                continue
            image = images[len(placed)]
            placed.append(PromptImage(image, len(out), width))
            out.extend([image.pad_id] * width)
        return out, tuple(placed)
