"""Images and videos in programs (on a text-only model the frontend side is built and
generation refuses the image with the engine's error; tests/multimodal runs them on a LLaVA
model), and `separate_reasoning` on a `<think>` answer forced by a regex."""

from __future__ import annotations

import base64

import radixgen as sgl


def test_image_goes_into_the_text_and_the_messages(engine_backend, tmp_path):
    picture = tmp_path / "pixel.png"
    picture.write_bytes(b"\x89PNG fake bytes")

    @sgl.function
    def describe(s, path):
        with s.user():
            s += sgl.image(path) + "What is this?"

    state = describe.run(path=str(picture), backend=engine_backend)
    assert state.error() is None
    assert state.text() == "<|im_start|>user\n<image>What is this?<|im_end|>\n"
    (message,) = state.messages()
    data = base64.b64encode(picture.read_bytes()).decode()
    assert message["content"] == [
        {"type": "text", "text": "<image>What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}},
    ]

    @sgl.function
    def describe_and_answer(s, path):
        s += sgl.user(sgl.image(path) + "What is this?")
        s += sgl.assistant(sgl.gen("answer", max_tokens=4))

    failed = describe_and_answer.run(path=str(picture), backend=engine_backend)
    assert isinstance(failed.error(), sgl.InvalidRequestError)
    assert "takes no images" in str(failed.error())


def test_video_is_refused(engine_backend):
    @sgl.function
    def watch(s):
        s += sgl.video("clip.mp4", num_frames=4) + "Describe."

    assert isinstance(watch.run(backend=engine_backend).error(), NotImplementedError)


def test_separate_reasoning_splits_think_tags(engine_backend):
    @sgl.function
    def reason(s):
        s += "Is ice cold? "
        s += sgl.separate_reasoning(
            sgl.gen("answer", max_tokens=16, regex=r"<think>[a-z]{2,10}</think>(yes|no)"),
            model_type="deepseek-r1",
        )

    state = reason.run(backend=engine_backend, temperature=0)
    assert state.error() is None
    assert state["answer"] in ("yes", "no")
    assert 2 <= len(state["answer_reasoning_content"]) <= 10
    assert state.text() == "Is ice cold? " + state["answer"]
