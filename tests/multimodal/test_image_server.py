"""Images over a live `radixgen serve` on the tiny LLaVA (radixgen/launcher.py): OpenAI chat
`image_url` parts (data URLs, local paths) through the openai SDK, `/generate` `image_data`, the
language's `sgl.image` over HTTP, and a 400 naming the problem for a remote URL, an oversized
image (bytes and pixels), a corrupt image and too many images, while a request that was already
streaming keeps running to its end."""

from __future__ import annotations

import base64
import io
import json
import threading

import httpx
import numpy as np
import pytest
from PIL import Image
from tiny_llava import TOKENS_PER_IMAGE, png_bytes

import radixgen as sgl
from radixgen.launcher import running_server

MAX_IMAGE_BYTES = 12_000
MAX_IMAGE_PIXELS = 200 * 200
MAX_IMAGES = 2
QUESTION = "USER: <image>\nWhat is shown? ASSISTANT:"
STREAM_TOKENS = 400  # long enough to outlast the bad requests


@pytest.fixture(scope="module")
def llava_server(llava_dir):
    args = [
        "--model",
        str(llava_dir[0]),
        "--dtype",
        "float32",
        "--kv-cache-tokens",
        "4096",
        "--chunked-prefill-size",
        "32",
        "--max-image-bytes",
        str(MAX_IMAGE_BYTES),
        "--max-image-pixels",
        str(MAX_IMAGE_PIXELS),
        "--max-images-per-request",
        str(MAX_IMAGES),
        "--log-level",
        "warning",
    ]
    with running_server(args) as server:
        yield server.url


def _data_url(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def _generate(url: str, **body) -> httpx.Response:
    body.setdefault("sampling_params", {"max_new_tokens": 4, "temperature": 0})
    return httpx.post(f"{url}/generate", json=body, timeout=60)


def _error(resp: httpx.Response) -> dict:
    assert resp.status_code == 400, resp.text
    return resp.json()["error"]


def test_chat_with_data_url_and_local_path(llava_server, tmp_path):
    import openai

    client = openai.OpenAI(base_url=f"{llava_server}/v1", api_key="unused", max_retries=0)
    raw = png_bytes(7)
    path = tmp_path / "seven.png"
    path.write_bytes(raw)
    answers = []
    for url in (_data_url(raw), str(path)):
        resp = client.chat.completions.create(
            model=client.models.list().data[0].id,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": url}},
                        {"type": "text", "text": "What is shown?"},
                    ],
                }
            ],
            max_tokens=4,
            temperature=0,
        )
        answers.append(resp.choices[0].message.content)
        assert resp.usage.prompt_tokens > TOKENS_PER_IMAGE
    assert answers[0] == answers[1]
    assert resp.usage.prompt_tokens_details.cached_tokens >= TOKENS_PER_IMAGE  # same image


def test_model_info_says_it_understands_images(llava_server):
    info = httpx.get(f"{llava_server}/get_model_info", timeout=30).json()
    assert info["has_image_understanding"] is True
    assert info["architectures"] == ["LlavaForConditionalGeneration"]


def test_generate_with_image_data_matches_the_engine_rules(llava_server):
    ok = _generate(llava_server, text=QUESTION, image_data=_data_url(png_bytes(3)))
    assert ok.status_code == 200, ok.text
    assert ok.json()["meta_info"]["prompt_tokens"] > TOKENS_PER_IMAGE
    two = _generate(
        llava_server,
        text="USER: <image> and <image>\nSame? ASSISTANT:",
        image_data=[_data_url(png_bytes(3)), _data_url(png_bytes(4))],
    )
    assert two.status_code == 200, two.text


def _noise_png(side: int) -> bytes:
    pixels = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _flat_png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(out, format="PNG")
    return out.getvalue()


def test_bad_images_are_400s_while_a_stream_runs(llava_server):
    stream_done: dict = {}

    def long_stream():
        body = {
            "text": QUESTION,
            "image_data": _data_url(png_bytes(5)),
            "sampling_params": {
                "max_new_tokens": STREAM_TOKENS,
                "temperature": 0,
                "ignore_eos": True,
            },
            "stream": True,
        }
        frames = []
        with httpx.stream("POST", f"{llava_server}/generate", json=body, timeout=300) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: {"):
                    frames.append(line)
                    started.set()
        stream_done["status"] = resp.status_code
        stream_done["last"] = json.loads(frames[-1][6:]) if frames else None
        started.set()

    started = threading.Event()
    runner = threading.Thread(target=long_stream)
    runner.start()
    assert started.wait(timeout=120)  # the stream is generating before the bad requests come

    remote = _generate(llava_server, text=QUESTION, image_data="https://example.com/cat.png")
    error = _error(remote)
    assert error["param"] == "image_data" and "remote URL" in error["message"]

    big = _noise_png(80)  # ~19 KB of incompressible pixels > MAX_IMAGE_BYTES
    assert len(big) > MAX_IMAGE_BYTES
    error = _error(_generate(llava_server, text=QUESTION, image_data=_data_url(big)))
    assert "bytes" in error["message"] and str(MAX_IMAGE_BYTES) in error["message"]

    wide = _flat_png(400, 200)  # small file, too many pixels
    assert len(wide) < MAX_IMAGE_BYTES
    error = _error(_generate(llava_server, text=QUESTION, image_data=_data_url(wide)))
    assert "pixels" in error["message"] and "400x200" in error["message"]

    corrupt = _data_url(png_bytes(1)[:60])  # a PNG cut short
    error = _error(_generate(llava_server, text=QUESTION, image_data=corrupt))
    assert "not a readable image" in error["message"]
    error = _error(_generate(llava_server, text=QUESTION, image_data="not base64 at all!"))
    assert error["param"] == "image_data"

    three = [_data_url(png_bytes(i)) for i in range(3)]
    error = _error(
        _generate(llava_server, text="USER: <image><image><image> ASSISTANT:", image_data=three)
    )
    assert f"at most {MAX_IMAGES} images" in error["message"]

    error = _error(_generate(llava_server, text="USER: no image here", image_data=three[:1]))
    assert "1 images were given" in error["message"] and "0 image tokens" in error["message"]

    chat = httpx.post(
        f"{llava_server}/v1/chat/completions",
        json={
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Look:"},
                        {"type": "image_url", "image_url": {"url": "http://10.0.0.1/x.png"}},
                    ],
                }
            ],
            "max_tokens": 2,
        },
        timeout=60,
    )
    error = _error(chat)
    assert error["param"] == "messages.0.content.1.image_url.url"
    chat_corrupt = httpx.post(
        f"{llava_server}/v1/chat/completions",
        json={
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": corrupt}}]}
            ],
            "max_tokens": 2,
        },
        timeout=60,
    )
    assert "not a readable image" in _error(chat_corrupt)["message"]

    runner.join(timeout=300)
    assert stream_done["status"] == 200
    assert stream_done["last"]["meta_info"]["completion_tokens"] == STREAM_TOKENS


def test_sgl_image_over_http(llava_server, tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    first.write_bytes(png_bytes(11))
    second.write_bytes(png_bytes(12))

    @sgl.function
    def compare(s, a, b):
        s += "USER: " + sgl.image(a) + " and " + sgl.image(b) + " Which is brighter? "
        s += "ASSISTANT:" + sgl.gen("answer", max_tokens=4, temperature=0)
        s += " So: " + sgl.select("pick", choices=["first", "second"])

    backend = sgl.RuntimeEndpoint(llava_server)
    state = compare.run(a=str(first), b=str(second), backend=backend)
    assert state.error() is None, state.error()
    assert isinstance(state["answer"], str)
    assert state["pick"] in ("first", "second")


# A template that renders content parts itself, in the style of llava-hf's (images first).
PARTS_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() }}: "
    "{% for p in m['content'] if p['type'] == 'image' %}<image>\n{% endfor %}"
    "{% for p in m['content'] if p['type'] == 'text' %}{{ p['text'] }} {% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def test_chat_templates_that_render_parts_get_parts(llava_engine, images):
    """llava-hf keeps a template that iterates content parts: it gets `{"type": "image"}` parts
    (and text parts, even for string content) instead of text with image tokens in it."""
    from radixgen.server.openai_api import _chat_input_ids
    from radixgen.server.protocol import ChatCompletionRequest

    body = ChatCompletionRequest(
        messages=[
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
        ]
    )
    tokenizer = llava_engine.tokenizer
    saved = tokenizer.chat_template
    tokenizer.chat_template = PARTS_TEMPLATE
    try:
        found: list[str] = []
        ids = _chat_input_ids(llava_engine, body, None, found)
    finally:
        tokenizer.chat_template = saved
    assert found == ["data:image/png;base64,AAAA"]
    assert tokenizer.decode(ids) == "SYSTEM: Be brief. USER: <image>\nLook: ASSISTANT:"
