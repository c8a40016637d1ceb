"""`sgl.image` in programs on the in-process engine backend: the image reaches the model (its
answer is the one a direct engine call gives for the same text and image), and the image's
KV is reused from the cache by that call."""

from __future__ import annotations

from tiny_llava import TOKENS_PER_IMAGE, png_bytes

import radixgen as sgl


def test_sgl_image_runs_in_process(llava_engine, tmp_path):
    path = tmp_path / "picture.png"
    path.write_bytes(png_bytes(21))

    @sgl.function
    def describe(s, image_path):
        s += "USER: " + sgl.image(image_path) + "\nWhat is shown? ASSISTANT:"
        s += sgl.gen("answer", max_tokens=6, temperature=0, ignore_eos=True)

    assert llava_engine.flush_cache()
    state = describe.run(image_path=str(path), backend=llava_engine)
    assert state.error() is None, state.error()
    prompt = state.text()[: -len(state["answer"])]
    direct = llava_engine.generate(
        prompt,
        {"max_new_tokens": 6, "temperature": 0, "ignore_eos": True},
        image_data=str(path),
    )
    assert direct["text"] == state["answer"]
    assert direct["meta_info"]["cached_tokens"] >= TOKENS_PER_IMAGE
