"""radixgen's LLaVA path against transformers' `LlavaForConditionalGeneration` on the same
tiny random-weight checkpoint, float32 greedy: token-identical continuations for prompts with
0, 1 and 2 images; the same tokens whether the image is prefilled in one pass or cut by chunk
boundaries, alone or in a batch; the preprocessing against transformers' CLIP processor."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_llava import IMAGE_SIZE, TOKENS_PER_IMAGE, png_bytes

from radixgen import Engine
from radixgen.runtime.model.loader.hf_loader import read_hf_config
from radixgen.runtime.multimodal.processor import ImageProcessor

MAX_NEW = 12
GREEDY = {"max_new_tokens": MAX_NEW, "temperature": 0, "ignore_eos": True}
PROMPTS = {
    0: "USER: Describe a quick brown fox. ASSISTANT:",
    1: "USER: <image>\nWhat is shown in this picture? ASSISTANT:",
    2: "USER: <image>\nand <image>\nCompare the two images. ASSISTANT:",
}


def _hf_greedy(llava_dir, engine: Engine, prompt: str, images: list[str]) -> list[int]:
    """transformers' greedy continuation on the expanded prompt and the same pixel values."""
    _, hf, tokenizer = llava_dir
    token = hf.config.image_token_id
    ids = []
    for t in tokenizer(prompt)["input_ids"]:
        ids.extend([token] * TOKENS_PER_IMAGE if t == token else [t])
    kwargs = {}
    if images:
        loaded = engine.images.load(images)
        kwargs["pixel_values"] = torch.stack([image.pixel_values for image in loaded])
    with torch.no_grad():
        out = hf.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=MAX_NEW,
            min_new_tokens=MAX_NEW,
            do_sample=False,
            **kwargs,
        )
    return out[0, len(ids) :].tolist()


def test_config_reads_the_vision_path(llava_dir):
    path, hf, _ = llava_dir
    cfg = read_hf_config(path)
    assert cfg.vision is not None
    assert cfg.vision.tokens_per_image == TOKENS_PER_IMAGE
    assert cfg.vision.feature_layers == (-2,) and cfg.vision.select_strategy == "default"
    assert cfg.vision.image_token_id == hf.config.image_token_id
    assert (cfg.hidden_size, cfg.num_layers, cfg.vocab_size) == (
        64,
        2,
        hf.config.text_config.vocab_size,
    )


@pytest.mark.parametrize("count", [0, 1, 2])
def test_greedy_matches_transformers(llava_dir, llava_engine, images, count):
    chosen = images[:count]
    out = llava_engine.generate(PROMPTS[count], GREEDY, image_data=chosen or None)
    expected = _hf_greedy(llava_dir, llava_engine, PROMPTS[count], chosen)
    assert out["output_ids"] == expected
    assert out["meta_info"]["prompt_tokens"] == len(
        llava_dir[2](PROMPTS[count])["input_ids"]
    ) + count * (TOKENS_PER_IMAGE - 1)


def test_the_image_decides_the_answer(llava_engine, images):
    """Guard against a path that ignores the pixels: different images, different tokens."""
    outs = [llava_engine.generate(PROMPTS[1], GREEDY, image_data=img) for img in images[:3]]
    assert len({tuple(o["output_ids"]) for o in outs}) == 3


def test_chunked_batched_and_whole_prefill_agree(llava_dir, llava_engine, images):
    """The session engine cuts every image with 32-token chunks; an engine without chunking
    prefills it whole; a batch mixes prompts with and without images."""
    whole = Engine(
        model=str(llava_dir[0]),
        dtype="float32",
        kv_cache_tokens=4096,
        chunked_prefill_size=-1,
        disable_radix_cache=True,
    )
    try:
        for count in (1, 2):
            chosen = images[1 : 1 + count]
            a = llava_engine.generate(PROMPTS[count], GREEDY, image_data=chosen)
            b = whole.generate(PROMPTS[count], GREEDY, image_data=chosen)
            assert a["output_ids"] == b["output_ids"]
        batch = [PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[1]]
        data = [None, images[2], [images[3], images[0]], images[3]]
        together = whole.generate(batch, GREEDY, image_data=data)
        for prompt, item, out in zip(batch, data, together, strict=True):
            alone = llava_engine.generate(prompt, GREEDY, image_data=item)
            assert out["output_ids"] == alone["output_ids"]
    finally:
        whole.shutdown()


def test_preprocessing_matches_transformers_clip_processor(tmp_path):
    transformers = pytest.importorskip("transformers")
    reference_cls = getattr(transformers, "CLIPImageProcessorPil", None)
    if reference_cls is None:
        pytest.skip("this transformers has no PIL CLIP image processor")
    reference = reference_cls(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    ours = ImageProcessor.for_model(None, IMAGE_SIZE)
    for seed, size in enumerate([(40, 32), (32, 48), (28, 28), (101, 57), (20, 90)]):
        picture = Image.open(io.BytesIO(png_bytes(seed, size)))
        expected = reference(picture, return_tensors="np")["pixel_values"][0]
        got = ours(picture).numpy()
        assert got.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_data_url_file_path_and_base64_are_the_same_image(llava_engine, images, tmp_path):
    raw = base64.b64decode(images[0])
    path = tmp_path / "picture.png"
    path.write_bytes(raw)
    sources = [images[0], f"data:image/png;base64,{images[0]}", str(path), f"file://{path}"]
    loaded = llava_engine.images.load(sources)
    assert len({image.pad_id for image in loaded}) == 1
    assert all(torch.equal(loaded[0].pixel_values, image.pixel_values) for image in loaded)


def test_mixed_steps_and_ngram_speculation_keep_the_tokens(llava_dir, llava_engine, images):
    """Image prompts prefilled in mixed steps (chunks next to running decodes) and decoded with
    n-gram speculation (drafts from a prompt full of placeholder ids) give the same tokens."""
    other = Engine(
        model=str(llava_dir[0]),
        dtype="float32",
        kv_cache_tokens=4096,
        chunked_prefill_size=16,
        enable_mixed_chunk=True,
        mixed_step_tokens=24,
        speculative_algorithm="ngram",
        tune=("speculative_draft_cost_float32=0",),  # draft whatever the acceptance
    )
    try:
        batch = [PROMPTS[0], PROMPTS[1], PROMPTS[2]]
        data = [None, images[0], [images[1], images[2]]]
        longer = {**GREEDY, "max_new_tokens": 24}
        together = other.generate(batch, longer, image_data=data)
        for prompt, item, out in zip(batch, data, together, strict=True):
            alone = llava_engine.generate(prompt, longer, image_data=item)
            assert out["output_ids"] == alone["output_ids"]
    finally:
        other.shutdown()


def test_prompt_logprobs_must_start_after_the_images(llava_engine, images):
    from radixgen import InvalidRequestError

    prompt = PROMPTS[1]
    with pytest.raises(InvalidRequestError, match="logprob_start_len"):
        llava_engine.generate(
            prompt, GREEDY, image_data=images[0], return_logprob=True, logprob_start_len=0
        )
    out = llava_engine.generate(
        prompt,
        {"max_new_tokens": 1},
        image_data=images[0],
        return_logprob=True,
        logprob_start_len=TOKENS_PER_IMAGE + 5,
    )
    entries = out["meta_info"]["input_token_logprobs"]
    assert entries and all(token >= 0 for _, token, _ in entries)


def test_a_processor_chat_template_is_used_when_the_tokenizer_has_none(llava_dir, tmp_path):
    """llava-hf keeps its chat template in the processor's chat_template.json."""
    import json
    import shutil

    from radixgen.runtime.model.loader import resolve_model
    from radixgen.runtime.tokenizer import load_tokenizer

    copy = tmp_path / "llava"
    shutil.copytree(llava_dir[0], copy)
    (copy / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    assert not load_tokenizer(resolve_model(str(copy))).chat_template
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (copy / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    assert load_tokenizer(resolve_model(str(copy))).chat_template == template


def test_pad_to_square_matches_transformers_llava_processor(tmp_path):
    """LlavaImageProcessor with do_pad: the picture is padded to a square in the mean colour
    before resizing (the original LLaVA's preprocessing)."""
    import json

    transformers = pytest.importorskip("transformers")
    reference_cls = getattr(transformers, "LlavaImageProcessorPil", None)
    if reference_cls is None:
        pytest.skip("this transformers has no PIL LLaVA image processor")
    settings = {
        "size": {"shortest_edge": IMAGE_SIZE},
        "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_pad": True,
    }
    reference = reference_cls(**settings)
    config = {"image_processor_type": "LlavaImageProcessor", **settings}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    ours = ImageProcessor.for_model(tmp_path, IMAGE_SIZE)
    assert ours.pad_square is not None
    for seed, size in enumerate([(40, 32), (32, 48), (101, 57)]):
        picture = Image.open(io.BytesIO(png_bytes(seed, size)))
        expected = reference(picture, return_tensors="np")["pixel_values"][0]
        np.testing.assert_allclose(ours(picture).numpy(), expected, rtol=0, atol=1e-5)
