"""Tiny random-weight LLaVA-1.5 checkpoints written with transformers' own classes (no network):
`LlavaForConditionalGeneration` over a CLIP vision tower and a Llama, saved with
`save_pretrained` next to a byte-level BPE tokenizer that has an `<image>` token, a chat
template and a `preprocessor_config.json` (CLIP's processor at the tiny image size).

The weights get a wider spread than transformers' default so greedy decoding is decided by the
model, not by float noise, and the norms and biases are non-trivial so a mis-loaded tensor
changes the output.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SIZE = 28
PATCH_SIZE = 4  # (28 / 4)^2 = 49 placeholder tokens per image
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH_SIZE) ** 2
IMAGE_TOKEN = "<image>"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
_CORPUS = [
    "USER: What is shown in this picture? ASSISTANT: A red square on a blue field.",
    "Describe the image in detail. The quick brown fox jumps over the lazy dog.",
    "Radix trees share prompt prefixes between requests, and images hash to their ids.",
]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", IMAGE_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    fast.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_llava(path: Path, seed: int = 0, feature_layer=-2, strategy: str = "default"):
    """Write a tiny LLaVA directory at `path`; returns (transformers model, tokenizer)."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=False,
    )
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=32,
    )
    config = LlavaConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=feature_layer,
        vision_feature_select_strategy=strategy,
    )
    model = LlavaForConditionalGeneration(config).float().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            elif name.endswith(".bias"):
                param.normal_(0.0, 0.2)
            else:
                param.normal_(0.0, 0.1)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "do_resize": True,
                "size": {"shortest_edge": IMAGE_SIZE},
                "resample": 3,
                "do_center_crop": True,
                "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "do_convert_rgb": True,
            }
        )
    )
    return model, tokenizer


def png_bytes(seed: int, size: tuple[int, int] = (40, 32)) -> bytes:
    """A random RGB picture (width, height) as PNG bytes."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()
