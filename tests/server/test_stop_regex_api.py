"""`stop_regex` over HTTP: native /generate (streamed and not) and the OpenAI routes' extension
field; a bad pattern is a 400 naming the field."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

CHAT = "<|im_start|>user\nName three animals.<|im_end|>\n<|im_start|>assistant\n"
MESSAGES = [{"role": "user", "content": "Name three animals."}]
ITEM = r"\n\d+\."  # the start of a numbered list's next item
GREEDY = {"max_new_tokens": 30, "temperature": 0}


def _generate(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/generate", json=body, timeout=60)


def _trimmed(text: str) -> str:
    match = re.search(ITEM, text)
    assert match, text  # the precondition: the unstopped answer has a second item
    return text[: match.start()]


def test_generate_stops_at_the_regex(server_url):
    free = _generate(server_url, text=CHAT, sampling_params=GREEDY).json()
    out = _generate(server_url, text=CHAT, sampling_params={**GREEDY, "stop_regex": ITEM}).json()
    assert out["text"] == _trimmed(free["text"])
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": ITEM}


def test_generate_stream_never_shows_trimmed_text(server_url):
    body = {"text": CHAT, "sampling_params": {**GREEDY, "stop_regex": [ITEM]}, "stream": True}
    with httpx.stream("POST", f"{server_url}/generate", json=body, timeout=60) as resp:
        frames = resp.read().decode().split("\n\n")
    assert frames[-2] == "data: [DONE]"
    outs = [json.loads(f.removeprefix("data: ")) for f in frames[:-2]]
    final = outs[-1]
    assert final["meta_info"]["finish_reason"] == {"type": "stop", "matched": ITEM}
    assert all(final["text"].startswith(o["text"]) for o in outs)
    assert final["text"] == _generate(server_url, **{**body, "stream": False}).json()["text"]


def test_generate_bad_regex_is_400_naming_stop_regex(server_url):
    resp = _generate(server_url, text=CHAT, sampling_params={"stop_regex": ["ok", "(unclosed"]})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "sampling_params.stop_regex"
    assert "(unclosed" in resp.json()["error"]["message"]


def test_openai_chat_and_completion_take_the_extension(client, model_id):
    def ask(**kwargs):
        return client.chat.completions.create(
            model=model_id, messages=MESSAGES, max_tokens=30, temperature=0, **kwargs
        )

    free = ask().choices[0].message.content
    choice = ask(extra_body={"stop_regex": ITEM}).choices[0]
    assert choice.message.content == _trimmed(free)
    assert choice.finish_reason == "stop"
    streamed = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in ask(extra_body={"stop_regex": [ITEM]}, stream=True)
        if chunk.choices
    )
    assert streamed == _trimmed(free)

    def complete(**kwargs):
        return client.completions.create(
            model=model_id, prompt=CHAT, max_tokens=30, temperature=0, **kwargs
        ).choices[0]

    free = complete().text
    choice = complete(extra_body={"stop_regex": ITEM})
    assert choice.text == _trimmed(free)
    assert choice.finish_reason == "stop"


@pytest.mark.parametrize("route", ["chat", "completion"])
def test_openai_bad_regex_is_400_naming_stop_regex(client, model_id, route):
    with pytest.raises(openai.BadRequestError) as err:
        if route == "chat":
            client.chat.completions.create(
                model=model_id, messages=MESSAGES, max_tokens=4, extra_body={"stop_regex": "["}
            )
        else:
            client.completions.create(
                model=model_id, prompt="Hi", max_tokens=4, extra_body={"stop_regex": ["a", "b)"]}
            )
    assert err.value.status_code == 400
    assert err.value.body["param"] == "stop_regex", err.value.body
