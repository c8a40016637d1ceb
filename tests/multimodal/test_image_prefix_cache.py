"""Images in the radix cache: the same image twice is served from the cache (its placeholder
run included), two different images after identical text share only the text before the image,
and the vision encoder runs once per image while its output stays cached."""

from __future__ import annotations

from tiny_llava import TOKENS_PER_IMAGE

PARAMS = {"max_new_tokens": 4, "temperature": 0, "ignore_eos": True}
BEFORE = "USER: Look at this picture closely. "
AFTER = "\nWhat is shown in this picture? ASSISTANT:"


def _fresh(engine) -> None:
    assert engine.flush_cache()


def _text_before_image(engine) -> int:
    ids = engine.tokenizer(BEFORE + "<image>")["input_ids"]
    return ids.index(engine.images.vision.image_token_id)


def test_same_image_twice_hits_the_cache_past_the_image(llava_engine, images):
    _fresh(llava_engine)
    first = llava_engine.generate(BEFORE + "<image>" + AFTER, PARAMS, image_data=images[0])
    assert first["meta_info"]["cached_tokens"] == 0
    again = llava_engine.generate(
        BEFORE + "<image>" + "\nWhat colour dominates? ASSISTANT:", PARAMS, image_data=images[0]
    )
    image_end = _text_before_image(llava_engine) + TOKENS_PER_IMAGE
    assert again["meta_info"]["cached_tokens"] >= image_end


def test_different_images_share_only_the_text_before_them(llava_engine, images):
    _fresh(llava_engine)
    prompt = BEFORE + "<image>" + AFTER

    def run(image):
        out = llava_engine.generate(prompt, PARAMS, image_data=image, return_logprob=True)
        return out, [lp for lp, _, _ in out["meta_info"]["output_token_logprobs"]]

    a, a_lps = run(images[0])
    b, b_lps = run(images[1])
    assert b["meta_info"]["cached_tokens"] == _text_before_image(llava_engine)
    assert max(abs(x - y) for x, y in zip(a_lps, b_lps, strict=True)) > 1e-3
    # each image's own KV is found by its own repeat, with the same answer
    for image, lps in ((images[0], a_lps), (images[1], b_lps)):
        repeat, repeat_lps = run(image)
        assert repeat["meta_info"]["cached_tokens"] == repeat["meta_info"]["prompt_tokens"] - 1
        assert max(abs(x - y) for x, y in zip(repeat_lps, lps, strict=True)) < 1e-4
    _fresh(llava_engine)
    _, alone_lps = run(images[1])  # b read no KV of a's image: computed alone, the same
    assert max(abs(x - y) for x, y in zip(alone_lps, b_lps, strict=True)) < 1e-4


def test_the_encoder_runs_once_per_image(llava_engine, images):
    _fresh(llava_engine)
    before = llava_engine.stats()["vision_encoded_images"]
    prompt = "USER: <image>\nA question number {}? ASSISTANT:"
    for k in range(3):  # a new question each time: the prompt is not all cached
        llava_engine.generate(prompt.format(k), PARAMS, image_data=images[2])
    # chunked prefill (32-token chunks) cuts the image: its later chunks reuse the encoding too
    assert llava_engine.stats()["vision_encoded_images"] - before == 1


def test_image_ids_never_reach_the_vocabulary(llava_engine, images):
    """Placeholder ids are negative: callers cannot forge them through input_ids, and
    repetition penalties and n-gram speculation never read them as tokens."""
    import pytest

    from radixgen import InvalidRequestError

    with pytest.raises(InvalidRequestError):
        llava_engine.generate(input_ids=[1, -5, 3], sampling_params=PARAMS)
    penalised = {**PARAMS, "repetition_penalty": 1.3}
    out = llava_engine.generate(BEFORE + "<image>" + AFTER, penalised, image_data=images[3])
    assert len(out["output_ids"]) == 4
