"""Request ids are the caller's labels, never the engine's keys: concurrent requests that carry
the same rid each get their own output, and /abort_request ends exactly the requests labelled
with the rid it names (on a server without API keys every caller is one tenant, so any caller
may abort by rid there; tenants apart are checked in tests/engine/test_isolation.py).

Overlap is arranged, not timed: a streamed request is known to be running once its first event
has arrived, and the concurrent request or abort is sent only then.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.server.conftest import wait_idle

PROMPTS = ["The history of the printing press begins", "A recipe for bread:"]
CHATS = ["Name a colour.", "What is two plus two?"]
LONG = {"max_new_tokens": 512, "temperature": 0, "ignore_eos": True}


def _greedy(prompt: str, rid: str, tokens: int = 16) -> dict[str, Any]:
    params = {"max_new_tokens": tokens, "temperature": 0, "ignore_eos": True}
    return {"text": prompt, "rid": rid, "sampling_params": params}


def _chat(content: str, rid: str) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": content}],
        "rid": rid,
        "max_tokens": 16,
        "temperature": 0,
    }


async def _events(lines: AsyncIterator[str], stop_after: int | None = None):
    """The JSON events among a server-sent event stream's lines (all, or the next few)."""
    count = 0
    async for line in lines:
        if line.startswith("data: {"):
            yield json.loads(line.removeprefix("data: "))
            count += 1
            if count == stop_after:
                return


def _finals(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last event of each request id in a /generate stream."""
    return {event["meta_info"]["id"]: event for event in events}


@pytest.fixture(scope="module")
def alone(server_url) -> dict[str, str]:
    """Each prompt's greedy text when it runs by itself (and each chat's content)."""
    texts = {}
    for prompt in PROMPTS:
        out = httpx.post(f"{server_url}/generate", json=_greedy(prompt, "solo"), timeout=60)
        texts[prompt] = out.json()["text"]
    out = httpx.post(f"{server_url}/generate", json=_greedy(PROMPTS[0], "solo", 32), timeout=60)
    texts["long"] = out.json()["text"]
    for content in CHATS:
        body = _chat(content, "solo")
        out = httpx.post(f"{server_url}/v1/chat/completions", json=body, timeout=60)
        texts[content] = out.json()["choices"][0]["message"]["content"]
    return texts


def test_equal_rids_of_concurrent_generate_requests_are_kept_apart(server_url, alone):
    async def run():
        async with httpx.AsyncClient(base_url=server_url, timeout=120) as client:
            first = _greedy(PROMPTS[0], "twin", tokens=32)
            body = {**first, "stream": True}
            async with client.stream("POST", "/generate", json=body) as stream:
                lines = stream.aiter_lines()
                events = [e async for e in _events(lines, stop_after=1)]  # it is running
                second = await client.post("/generate", json=_greedy(PROMPTS[1], "twin"))
                events += [e async for e in _events(lines)]
            return events, second

    events, second = asyncio.run(run())
    assert second.status_code == 200
    assert second.json()["text"] == alone[PROMPTS[1]]
    assert second.json()["meta_info"]["id"] == "twin"
    # Every event of the stream is its own request's: ids, and texts that only grow.
    assert {e["meta_info"]["id"] for e in events} == {"twin"}
    texts = [e["text"] for e in events]
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:], strict=False))
    assert texts[-1] == alone["long"]
    assert events[-1]["meta_info"]["finish_reason"] == {"type": "length", "length": 32}


def test_equal_rids_of_concurrent_chat_requests_are_kept_apart(server_url, alone):
    async def run():
        async with httpx.AsyncClient(base_url=server_url, timeout=120) as client:
            return await asyncio.gather(
                *(client.post("/v1/chat/completions", json=_chat(c, "twin")) for c in CHATS)
            )

    for content, response in zip(CHATS, asyncio.run(run()), strict=True):
        assert response.status_code == 200
        body = response.json()
        assert body["id"] == "twin"
        assert body["choices"][0]["message"]["content"] == alone[content]


def test_abort_by_rid_ends_that_request_and_its_samples_only(server_url, alone):
    async def run():
        async with httpx.AsyncClient(base_url=server_url, timeout=120) as client:
            victim = {"text": "Count to a thousand:", "rid": "victim", "stream": True}
            victim["sampling_params"] = {**LONG, "n": 2}
            async with client.stream("POST", "/generate", json=victim) as stream:
                lines = stream.aiter_lines()
                events = [e async for e in _events(lines, stop_after=1)]
                bystander = asyncio.ensure_future(
                    client.post("/generate", json=_greedy(PROMPTS[0], "bystander"))
                )
                unknown = await client.post("/abort_request", json={"rid": "nobody"})
                aborted = await client.post("/abort_request", json={"rid": "victim"})
                events += [e async for e in _events(lines)]
            return events, await bystander, unknown, aborted

    events, bystander, unknown, aborted = asyncio.run(run())
    assert unknown.status_code == 200 and aborted.status_code == 200
    finals = _finals(events)
    assert set(finals) == {"victim_0", "victim_1"}
    for final in finals.values():
        assert final["meta_info"]["finish_reason"]["type"] == "abort"
        assert len(final["output_ids"]) < LONG["max_new_tokens"]
    assert bystander.status_code == 200
    assert bystander.json()["text"] == alone[PROMPTS[0]]
    assert bystander.json()["meta_info"]["finish_reason"]["type"] == "length"


def test_abort_all_ends_every_running_request(server_url):
    async def run():
        async with httpx.AsyncClient(base_url=server_url, timeout=120) as client:
            bodies = [
                {"text": f"List {i}:", "rid": f"all-{i}", "stream": True, "sampling_params": LONG}
                for i in range(2)
            ]
            async with (
                client.stream("POST", "/generate", json=bodies[0]) as one,
                client.stream("POST", "/generate", json=bodies[1]) as two,
            ):
                lines = [one.aiter_lines(), two.aiter_lines()]
                events = []
                for it in lines:  # both are running
                    events.append([e async for e in _events(it, stop_after=1)])
                aborted = await client.post("/abort_request", json={"abort_all": True})
                for got, it in zip(events, lines, strict=True):
                    got += [e async for e in _events(it)]
            return events, aborted

    events, aborted = asyncio.run(run())
    assert aborted.status_code == 200
    for i, stream_events in enumerate(events):
        final = stream_events[-1]
        assert final["meta_info"]["id"] == f"all-{i}"
        assert final["meta_info"]["finish_reason"]["type"] == "abort"


def test_server_is_idle_and_kv_whole_afterwards(server_url):
    stats = wait_idle(server_url)
    assert stats["kv_idle_invariant_ok"] is True
    assert stats["kv_protected"] == 0
