"""The OpenAI API through the real `openai` client and raw HTTP, against a live server."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.server.conftest import wait_idle

CHAT = [{"role": "user", "content": "Name three animals."}]


def test_models_list_and_unknown_model(client, model_id):
    models = client.models.list().data
    assert len(models) == 1 and models[0].object == "model"
    assert isinstance(models[0].model_extra["max_model_len"], int)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="no-such-model", prompt="hi", max_tokens=2)
    assert err.value.body["param"] == "model"


def test_completion_shape_and_usage(client, model_id, server_url):
    out = client.completions.create(
        model=model_id,
        prompt="The capital of France is",
        max_tokens=5,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert out.object == "text_completion" and out.id.startswith("cmpl-")
    assert isinstance(out.created, int) and len(out.choices) == 1
    assert out.choices[0].finish_reason == "length" and out.choices[0].index == 0
    assert out.usage.completion_tokens == 5 and out.usage.prompt_tokens == 5
    assert out.usage.total_tokens == 10


def test_chat_shape_and_reference_answer(client, model_id):
    out = client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=20,
        temperature=0,
    )
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-")
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == "The capital of France is Paris."
    assert out.choices[0].finish_reason == "stop"
    assert out.usage.prompt_tokens == 37
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_text_part_content_equals_string_content(client, model_id):
    parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Name three "},
                {"type": "text", "text": "animals."},
            ],
        }
    ]
    a = client.chat.completions.create(model=model_id, messages=CHAT, max_tokens=10, temperature=0)
    b = client.chat.completions.create(model=model_id, messages=parts, max_tokens=10, temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_chat_stream_equals_non_stream(client, model_id):
    full = client.chat.completions.create(
        model=model_id, messages=CHAT, max_tokens=30, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model=model_id,
            messages=CHAT,
            max_tokens=30,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    content = [c for c in chunks if c.choices]
    assert (
        "".join(c.choices[0].delta.content or "" for c in content)
        == full.choices[0].message.content
    )
    assert content[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in content[1:])
    assert sum(c.choices[0].finish_reason is not None for c in content) == 1
    assert len({c.id for c in chunks}) == 1
    assert all(c.usage is None for c in content)
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage.total_tokens == full.usage.total_tokens


def test_completion_stream_raw_frames(server_url, model_id):
    body = {
        "model": model_id,
        "prompt": "Once upon a time",
        "max_tokens": 12,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream("POST", f"{server_url}/v1/completions", json=body, timeout=60) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = resp.read().decode()
    frames = raw.split("\n\n")
    assert frames[-1] == "" and frames[-2] == "data: [DONE]"
    events = [json.loads(f[len("data: ") :]) for f in frames[:-2]]
    text = "".join(e["choices"][0]["text"] for e in events)
    full = httpx.post(
        f"{server_url}/v1/completions", json={**body, "stream": False}, timeout=60
    ).json()
    assert text == full["choices"][0]["text"]
    assert [e["choices"][0]["finish_reason"] for e in events].count("length") == 1


def test_n_and_prompt_lists_are_ordered(client, model_id):
    out = client.completions.create(
        model=model_id, prompt="Tell me a word:", max_tokens=6, n=3, temperature=1.0, seed=5
    )
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert all(c.finish_reason is not None for c in out.choices)
    batch = client.completions.create(
        model=model_id, prompt=["Red is", "Blue is a"], max_tokens=4, n=2, temperature=0
    )
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    assert batch.choices[0].text == batch.choices[1].text  # greedy samples of p0 agree
    assert batch.usage.prompt_tokens == 2 + 3  # counted once per prompt
    streamed = list(
        client.completions.create(
            model=model_id,
            prompt="Tell me a word:",
            max_tokens=6,
            n=3,
            temperature=1.0,
            stream=True,
        )
    )
    assert all(len(c.choices) == 1 for c in streamed)
    finals = [c.choices[0].index for c in streamed if c.choices[0].finish_reason]
    assert sorted(finals) == [0, 1, 2]


def test_stop_strings_streamed_and_not(client, model_id):
    full = (
        client.completions.create(
            model=model_id, prompt="1, 2, 3, 4,", max_tokens=20, temperature=0
        )
        .choices[0]
        .text
    )
    stop = full[4:7]
    out = client.completions.create(
        model=model_id, prompt="1, 2, 3, 4,", max_tokens=20, temperature=0, stop=[stop]
    )
    assert out.choices[0].text == full[: full.index(stop)]
    assert out.choices[0].finish_reason == "stop"
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=model_id,
            prompt="1, 2, 3, 4,",
            max_tokens=20,
            temperature=0,
            stop=[stop],
            stream=True,
        )
    )
    assert streamed == out.choices[0].text


def test_completion_logprobs_and_echo(client, model_id):
    out = client.completions.create(
        model=model_id, prompt="The sky is", max_tokens=4, temperature=0, logprobs=3
    )
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert len(lp.text_offset) == 4
    assert all(v <= 0 for v in lp.token_logprobs)
    assert all(3 <= len(top) <= 4 for top in lp.top_logprobs)
    echo = client.completions.create(
        model=model_id, prompt="The sky is", max_tokens=2, temperature=0, logprobs=1, echo=True
    )
    assert echo.choices[0].text.startswith("The sky is")
    assert echo.choices[0].logprobs.token_logprobs[0] is None


def test_chat_logprobs(client, model_id):
    out = client.chat.completions.create(
        model=model_id, messages=CHAT, max_tokens=6, temperature=0, logprobs=True, top_logprobs=5
    )
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens
    for item in content:
        assert len(item.top_logprobs) == 5 and -9999.0 <= item.logprob <= 0
        assert isinstance(item.bytes, list)


def test_seed_repeats_and_cached_tokens(client, model_id, server_url):
    kwargs = dict(model=model_id, messages=CHAT, max_tokens=12, temperature=1.0, seed=11)
    a = client.chat.completions.create(**kwargs)
    b = client.chat.completions.create(**kwargs)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert b.usage.prompt_tokens_details.cached_tokens == b.usage.prompt_tokens - 1
    wait_idle(server_url)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": -1}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"extra_body": {"top_k": -2}}, "top_k"),
        ({"extra_body": {"min_tokens": 10}, "max_tokens": 5}, "min_tokens"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"seed": 2**64}, "seed"),
        ({"stop": [""]}, "stop"),
        ({"stop": ["x"] * 17}, "stop"),
        ({"n": 0}, "n"),
        ({"max_tokens": 9000}, "max_tokens"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [[]]}, "prompt"),
        ({"prompt": [1, -1]}, "prompt"),
        ({"prompt": [1, 10**7]}, "prompt"),
    ],
)
def test_bad_completion_input_is_400_naming_the_field(client, model_id, kwargs, param):
    kwargs = {"prompt": "Hello", "max_tokens": 4, **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=model_id, **kwargs)
    assert err.value.status_code == 400
    assert err.value.body["param"] == param, err.value.body


def test_prompt_one_below_the_context_length_is_served(client, model_id):
    out = client.completions.create(model=model_id, prompt=[198] * 8191, max_tokens=1)
    assert out.usage.prompt_tokens == 8191 and out.usage.completion_tokens == 1


def test_oversized_body_is_413_and_server_stays_healthy(server_url):
    resp = httpx.post(
        f"{server_url}/v1/completions",
        timeout=30,
        json={"prompt": "x" * (9 * 1024 * 1024), "max_tokens": 1},
    )
    assert resp.status_code == 413 and "error" in resp.json()
    assert httpx.get(f"{server_url}/health", timeout=10).status_code == 200


def test_context_length_error(client, model_id):
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=model_id, prompt=[1] * 8190, max_tokens=16)
    assert "maximum context length" in err.value.message
    assert err.value.code == "context_length_exceeded"


@pytest.mark.parametrize(
    "body",
    [
        {"messages": []},
        {},
        {"messages": [{"role": "wizard", "content": "hi"}]},
        {"messages": CHAT, "top_logprobs": 3},
        {"messages": CHAT, "logprobs": True, "top_logprobs": 21},
        {"messages": CHAT, "stream_options": {"include_usage": True}},
        {"messages": CHAT, "response_format": {"type": "xml"}},
        {"messages": CHAT, "tool_choice": "required"},
    ],
)
def test_bad_chat_input_is_400(server_url, body):
    resp = httpx.post(f"{server_url}/v1/chat/completions", json=body, timeout=30)
    assert resp.status_code == 400, resp.text
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"prompt": "x",', {"content-type": "application/json"}),
        (b"[1, 2, 3]", {"content-type": "application/json"}),
        (b"prompt=x", {"content-type": "application/x-www-form-urlencoded"}),
    ],
)
def test_malformed_bodies_are_400_and_server_stays_healthy(server_url, content, headers):
    resp = httpx.post(f"{server_url}/v1/completions", content=content, headers=headers, timeout=30)
    assert resp.status_code == 400
    assert "error" in resp.json() and "/" not in resp.json()["error"]["message"][:1]
    assert httpx.get(f"{server_url}/health", timeout=10).status_code == 200
