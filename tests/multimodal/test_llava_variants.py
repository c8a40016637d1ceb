"""Checkpoint variants the loader claims: several vision feature layers with the `full`
strategy (CLS kept: one more token per image), and the weight names transformers >= 5 uses
(`model.language_model.*`, `model.vision_tower.*` without `vision_model.`, top-level
`lm_head`) next to llava-hf's own."""

from __future__ import annotations

import shutil

import torch
from safetensors.torch import load_file, save_file
from tiny_llava import TOKENS_PER_IMAGE, build_llava

from radixgen import Engine

PROMPT = "USER: <image>\nWhat is shown in this picture? ASSISTANT:"
GREEDY = {"max_new_tokens": 10, "temperature": 0, "ignore_eos": True}


def _hf_greedy(hf, tokenizer, engine: Engine, image: str, per_image: int) -> list[int]:
    token = hf.config.image_token_id
    ids = []
    for t in tokenizer(PROMPT)["input_ids"]:
        ids.extend([token] * per_image if t == token else [t])
    pixels = engine.images.load([image])[0].pixel_values[None]
    with torch.no_grad():
        out = hf.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            pixel_values=pixels,
            max_new_tokens=10,
            min_new_tokens=10,
            do_sample=False,
        )
    return out[0, len(ids) :].tolist()


def test_feature_layer_list_with_full_strategy(tmp_path, images):
    hf, tokenizer = build_llava(tmp_path, seed=3, feature_layer=[-3, -1], strategy="full")
    engine = Engine(model=str(tmp_path), dtype="float32", kv_cache_tokens=2048)
    try:
        assert engine.images.vision.tokens_per_image == TOKENS_PER_IMAGE + 1
        out = engine.generate(PROMPT, GREEDY, image_data=images[0])
        assert out["output_ids"] == _hf_greedy(
            hf, tokenizer, engine, images[0], TOKENS_PER_IMAGE + 1
        )
    finally:
        engine.shutdown()


def _new_layout(name: str) -> str:
    if name.startswith("language_model.lm_head"):
        return name.removeprefix("language_model.")
    if name.startswith("language_model.model."):
        return "model.language_model." + name.removeprefix("language_model.model.")
    if name.startswith("vision_tower.vision_model."):
        return "model.vision_tower." + name.removeprefix("vision_tower.vision_model.")
    return "model." + name


def test_transformers_5_weight_names_load_the_same_model(llava_dir, llava_engine, images, tmp_path):
    path = tmp_path / "renamed"
    shutil.copytree(llava_dir[0], path)
    tensors = load_file(str(path / "model.safetensors"))
    assert any(n.startswith("language_model.model.") for n in tensors)  # llava-hf's own names
    save_file({_new_layout(n): t for n, t in tensors.items()}, str(path / "model.safetensors"))
    engine = Engine(model=str(path), dtype="float32", kv_cache_tokens=2048)
    try:
        out = engine.generate(PROMPT, GREEDY, image_data=images[1])
    finally:
        engine.shutdown()
    assert (
        out["output_ids"]
        == llava_engine.generate(PROMPT, GREEDY, image_data=images[1])["output_ids"]
    )
