"""No request can hurt another: hostile or malformed generation requests are refused at the door
with a 400 naming the field (OpenAI's error envelope), and a greedy request running at the same
time produces exactly what it produces alone.

Every bad case is sent while a streamed greedy request is mid-generation (its first event has
arrived): the cases of one route go together, all at once, overlapping one greedy request. The
module fixture collects every answer; each case is then checked by its own test. Raw JSON text
is sent where Python's encoder would not produce it (`NaN`, `Infinity`, lone surrogates).
The cases that concern request ids, aborts and caps at the limit are in test_adversarial_rids.
"""

from __future__ import annotations

import asyncio
import json
import sysconfig
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import radixgen
from radixgen.runtime.model.loader import default_model_path
from tests.server.conftest import wait_idle

GREEDY = {
    "text": "The history of the printing press begins",
    "sampling_params": {"max_new_tokens": 16, "temperature": 0, "ignore_eos": True},
}
ENVELOPE = {"message", "type", "param", "code"}
MAX_MESSAGE_CHARS = 300


@dataclass(frozen=True)
class Case:
    """A bad request: `body` is a JSON-able value or raw JSON text. `param` is the field the
    error must name (exactly, or as the last part of a dotted path); None: not checked."""

    id: str
    path: str
    body: Any
    param: str | None
    status: int = 400
    message_has: str | None = None


def gen(**params: Any) -> dict[str, Any]:
    return {"text": "Hi", "sampling_params": {"max_new_tokens": 2, **params}}


def gen_raw(params: str) -> str:
    return '{"text": "Hi", "sampling_params": {"max_new_tokens": 2, ' + params + "}}"


def chat(**fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, **fields}


G, C, P = "/generate", "/v1/chat/completions", "/v1/completions"

GENERATE_CASES = [
    Case("logit_bias-value-string", G, gen(logit_bias={"1": "x"}), "logit_bias"),
    Case("logit_bias-key-abc", G, gen(logit_bias={"abc": 1}), "logit_bias"),
    Case("logit_bias-key-arabic-digits", G, gen(logit_bias={"١٢": 1}), "logit_bias"),
    Case("logit_bias-key-negative", G, gen(logit_bias={"-5": 1}), "logit_bias"),
    Case("logit_bias-key-out-of-vocab", G, gen(logit_bias={str(10**9): 1}), "logit_bias"),
    Case("logit_bias-NaN", G, gen_raw('"logit_bias": {"1": NaN}'), "logit_bias"),
    Case("logit_bias-Infinity", G, gen_raw('"logit_bias": {"1": Infinity}'), "logit_bias"),
    Case("logit_bias--Infinity", G, gen_raw('"logit_bias": {"1": -Infinity}'), "logit_bias"),
    Case("logit_bias-1025", G, gen(logit_bias={str(i): 1 for i in range(1025)}), "logit_bias"),
    Case("logit_bias-101", G, gen(logit_bias={"1": 101}), "logit_bias"),
    Case(
        "top_logprobs_num-huge",
        G,
        {**gen(), "return_logprob": True, "top_logprobs_num": 10**9},
        "top_logprobs_num",
    ),
    Case("top_logprobs_num-negative", G, {**gen(), "top_logprobs_num": -1}, "top_logprobs_num"),
    Case("skip_special_tokens-1", G, gen(skip_special_tokens=1), "skip_special_tokens"),
    Case("skip_special_tokens-yes", G, gen(skip_special_tokens="yes"), "skip_special_tokens"),
    Case("stop-number", G, gen(stop=5), "stop"),
    Case("stop-17", G, gen(stop=[f"s{i}" for i in range(17)]), "stop"),
    Case("stop-empty-string", G, gen(stop=""), "stop"),
    Case("stop-too-long", G, gen(stop=["x" * 1025]), "stop"),
    Case("stop_token_ids-out-of-vocab", G, gen(stop_token_ids=[10**9]), "stop_token_ids"),
    Case("json_schema-list", G, gen(json_schema=[{"type": "string"}]), "json_schema"),
    Case("regex-invalid", G, gen(regex="a(b[z-a"), "regex", message_has="invalid regex"),
    Case("ebnf-invalid", G, gen(ebnf="root ::= (("), "ebnf", message_has="invalid ebnf"),
    Case("json_schema-invalid", G, gen(json_schema={"type": "foo"}), "json_schema"),
    Case("two-constraints", G, gen(regex="a", ebnf='root ::= "a"'), "ebnf"),
    Case(
        "rid-list-shorter",
        G,
        {"text": ["a", "b", "c"], "rid": ["x", "y"], "sampling_params": {"max_new_tokens": 1}},
        "rid",
    ),
    Case(
        "rid-duplicates",
        G,
        {"text": ["a", "b"], "rid": ["x", "x"], "sampling_params": {"max_new_tokens": 1}},
        "rid",
    ),
    Case("rid-empty", G, {**gen(), "rid": ""}, "rid"),
    Case("n-0", G, gen(n=0), "n"),
    Case("n-129", G, gen(n=129), "n", message_has="128"),
    Case("n-20000", G, gen(n=20000), "n"),
    Case("n-over-queue-capacity", G, gen(n=57), "n", message_has="max_queued_requests"),
    Case(
        "257-prompts",
        G,
        {"text": ["a"] * 257, "sampling_params": {"max_new_tokens": 1}},
        "text",
        message_has="256",
    ),
    Case(
        "3-prompts-x-n-100",
        G,
        {"text": ["a", "b", "c"], "sampling_params": {"max_new_tokens": 1, "n": 100}},
        "n",
        message_has="300",
    ),
    Case(
        "sampling_params-list-length",
        G,
        {"text": ["a", "b"], "sampling_params": [{"max_new_tokens": 1}]},
        "sampling_params",
    ),
    Case("text-lone-surrogate", G, '{"text": "Hi \\ud800", "sampling_params": {}}', "text"),
    Case("text-list-lone-surrogate", G, '{"text": ["ok", "\\udfff"]}', "text"),
    Case("input_ids-negative", G, {"input_ids": [1, -2]}, "input_ids"),
    Case("input_ids-float", G, {"input_ids": [1, 2.5]}, "input_ids"),
    Case("input_ids-nested-wrongly", G, {"input_ids": [[1, [2]]]}, "input_ids"),
    Case("input_ids-mixed-depth", G, {"input_ids": [1, [2]]}, "input_ids"),
    Case("input_ids-out-of-vocab", G, {"input_ids": [1, 10**9]}, "input_ids"),
    Case("unknown-sampling-parameter", G, gen(bogus=1), "sampling_params.bogus"),
    Case("max_new_tokens-1.5", G, gen(max_new_tokens=1.5), "max_new_tokens"),
    Case("max_new_tokens-string", G, gen(max_new_tokens="8"), "max_new_tokens"),
    Case(
        "max_new_tokens-past-context",
        G,
        gen(max_new_tokens=10**6),
        "max_new_tokens",
        message_has="maximum context length",
    ),
    Case("temperature-negative", G, gen(temperature=-1), "temperature"),
    Case("temperature-NaN", G, gen_raw('"temperature": NaN'), "temperature"),
    Case("seed-past-int64", G, gen(seed=2**64), "seed"),
    Case("return_logprob-string", G, {**gen(), "return_logprob": "true"}, "return_logprob"),
    Case("logprob_start_len--2", G, {**gen(), "logprob_start_len": -2}, "logprob_start_len"),
    Case("sampling_params-string", G, {"text": "Hi", "sampling_params": "x"}, "sampling_params"),
    # Admitted, then ended by its own grammar mid-generation (a lexer limit): a 400 too.
    Case("regex-past-lexer-limit", G, gen(regex="a{1000000}"), None),
]

CHAT_CASES = [
    Case(
        "chat-content-lone-surrogate",
        C,
        '{"messages": [{"role": "user", "content": "Hi \\ud800"}], "max_tokens": 2}',
        "messages.0.content",
    ),
    Case("chat-logit_bias-arabic-digits", C, chat(logit_bias={"١٢": 1}), "logit_bias"),
    Case(
        "chat-max_completion_tokens-0",
        C,
        chat(max_completion_tokens=0),
        "max_completion_tokens",
    ),
    Case("chat-stop-number", C, chat(stop=5), "stop"),
    Case("chat-json_schema-list", C, chat(json_schema=[{"type": "string"}]), "json_schema"),
    Case("chat-n-huge", C, chat(n=10**6), "n"),
    Case("chat-messages-empty", C, {"messages": [], "max_tokens": 2}, "messages"),
    Case("chat-regex-invalid", C, chat(regex="a("), "regex"),
    Case("chat-logprobs-string", C, chat(logprobs="yes"), "logprobs"),
    Case("chat-top_logprobs-21", C, chat(logprobs=True, top_logprobs=21), "top_logprobs"),
    Case(
        "chat-rid-lone-surrogate",
        C,
        '{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "rid": "\\udc00"}',
        "rid",
    ),
]

COMPLETION_CASES = [
    Case("completion-token-ids-out-of-vocab", P, {"prompt": [1, 10**9]}, "prompt"),
    Case("completion-nested-ids-out-of-vocab", P, {"prompt": [[1], [49152]]}, "prompt"),
    Case("completion-logprobs-21", P, {"prompt": "Hi", "logprobs": 21}, "logprobs"),
    Case("completion-prompt-empty", P, {"prompt": []}, "prompt"),
    Case("completion-n-129", P, {"prompt": "Hi", "max_tokens": 1, "n": 129}, "n"),
    Case("abort-rid-number", "/abort_request", {"rid": 3}, "rid"),
    Case("abort_all-string", "/abort_request", {"abort_all": "yes"}, "abort_all"),
]

GROUPS = {"generate": GENERATE_CASES, "chat": CHAT_CASES, "completions": COMPLETION_CASES}
ALL_CASES = [case for cases in GROUPS.values() for case in cases]


@dataclass
class Outcomes:
    responses: dict[str, tuple[int, Any]]  # case id -> (status, JSON body)
    greedy: dict[str, str]  # group -> the concurrent greedy request's text


async def _send(client: httpx.AsyncClient, case: Case) -> tuple[int, Any]:
    if isinstance(case.body, str):
        content = case.body.encode()
    else:
        content = json.dumps(case.body, ensure_ascii=False).encode()
    response = await client.post(
        case.path, content=content, headers={"content-type": "application/json"}
    )
    return response.status_code, response.json()


async def _alongside_greedy(client: httpx.AsyncClient, cases: list[Case]):
    """Send `cases` all at once while a streamed greedy request is mid-generation; returns the
    greedy request's final text and each case's answer."""
    body = {**GREEDY, "stream": True}
    async with client.stream("POST", "/generate", json=body) as stream:
        assert stream.status_code == 200
        lines = stream.aiter_lines()
        events = [event async for event in _events(lines, stop_after=1)]
        answers = await asyncio.gather(*(_send(client, case) for case in cases))
        events += [event async for event in _events(lines)]
    return json.loads(events[-1])["text"], answers


async def _events(lines: AsyncIterator[str], stop_after: int | None = None):
    """The JSON payloads among a server-sent event stream's lines (all, or the next
    `stop_after`)."""
    count = 0
    async for line in lines:
        if line.startswith("data: {"):
            yield line.removeprefix("data: ")
            count += 1
            if count == stop_after:
                return


@pytest.fixture(scope="module")
def reference(server_url) -> str:
    """The greedy request's text when it runs alone."""
    out = httpx.post(f"{server_url}/generate", json=GREEDY, timeout=60)
    assert out.status_code == 200
    return out.json()["text"]


@pytest.fixture(scope="module")
def outcomes(server_url, reference) -> Outcomes:
    result = Outcomes({}, {})

    async def run() -> None:
        async with httpx.AsyncClient(base_url=server_url, timeout=120) as client:
            for group, cases in GROUPS.items():
                text, answers = await _alongside_greedy(client, cases)
                result.greedy[group] = text
                for case, answer in zip(cases, answers, strict=True):
                    result.responses[case.id] = answer

    asyncio.run(run())
    return result


def _names(param: str | None, field: str) -> bool:
    return param is not None and (param == field or param.endswith("." + field))


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_bad_request_is_refused_naming_the_field(outcomes, case):
    status, body = outcomes.responses[case.id]
    assert status == case.status, (case.id, body)
    error = body["error"]
    assert set(error) == ENVELOPE and error["type"] == "invalid_request_error", body
    if case.param is not None:
        assert _names(error["param"], case.param), (case.id, error)
    message = error["message"]
    # One short line, no excerpt of a grammar with a caret, no traceback or file path.
    assert "\n" not in message and len(message) <= MAX_MESSAGE_CHARS, message
    assert "^" not in message and "Traceback" not in message and "/work" not in message
    if case.message_has is not None:
        assert case.message_has in message, message


@pytest.mark.parametrize("group", list(GROUPS))
def test_concurrent_greedy_request_is_unaffected(outcomes, reference, group):
    assert outcomes.greedy[group] == reference


def test_model_info_reveals_no_paths(server_url):
    private = {
        str(Path(radixgen.__file__).resolve().parents[1]),  # the checkout
        sysconfig.get_paths()["purelib"],  # site-packages
        str(default_model_path()),
        str(default_model_path().parent),
    }
    bodies = {}
    for path in ("/v1/models", "/get_model_info", "/model_info", "/get_server_info"):
        response = httpx.get(f"{server_url}{path}", timeout=30)
        assert response.status_code == 200
        bodies[path] = response
    model_id = bodies["/v1/models"].json()["data"][0]["id"]
    bodies["/v1/models/{id}"] = httpx.get(f"{server_url}/v1/models/{model_id}", timeout=30)
    card = bodies["/v1/models"].json()["data"][0]
    info = bodies["/get_model_info"].json()
    assert "/" not in card["id"] and "/" not in card["root"]
    assert "/" not in info["model_path"] and "/" not in info["tokenizer_path"]
    assert "/" not in bodies["/get_server_info"].json()["model"]
    for path, response in bodies.items():
        for secret in private:
            assert secret not in response.text, (path, secret)


def test_server_is_idle_and_kv_whole_afterwards(server_url, outcomes):
    """Last: nothing the bad requests did is left running or holding KV."""
    stats = wait_idle(server_url)
    assert stats["kv_idle_invariant_ok"] is True
    assert stats["kv_protected"] == 0
    assert stats["kv_free"] + stats["kv_evictable"] == stats["kv_total"]
