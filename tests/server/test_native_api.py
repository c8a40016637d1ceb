"""SGLang's native API (what its frontend's RuntimeEndpoint sends), faults and auth."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import httpx
import pytest

from radixgen.runtime.config import EngineConfig
from radixgen.server.app import create_app
from radixgen.server.context import EngineHolder, ServerSettings
from radixgen.server.dashboard.routes import SHELL_FILES
from tests.server.conftest import wait_idle

PROMPT = "The capital of France is"


def _generate(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/generate", json=body, timeout=60)


def test_model_and_server_info(server_url):
    info = httpx.get(f"{server_url}/get_model_info").json()
    served = httpx.get(f"{server_url}/v1/models").json()["data"][0]
    # Routers register the model by this name; no file-system path is revealed anywhere.
    assert info["model_path"] == info["tokenizer_path"] == served["id"] == served["root"]
    assert info["is_generation"] is True and "/" not in info["model_path"]
    assert httpx.get(f"{server_url}/model_info").json() == info  # SGLang's newer names
    server = httpx.get(f"{server_url}/get_server_info").json()
    assert server["kv_total"] == 16384 and "version" in server
    assert server["model"] == served["id"]
    assert httpx.get(f"{server_url}/server_info").json()["kv_total"] == 16384
    assert server["served_model_name"] == served["id"] and server["dp_size"] == 1
    load = httpx.get(f"{server_url}/get_load").json()  # what load-aware router policies poll
    assert [set(entry) for entry in load] == [
        {"dp_rank", "num_reqs", "num_waiting_reqs", "num_tokens"}
    ]
    assert httpx.get(f"{server_url}/health_generate", timeout=30).status_code == 200


def test_generate_single_and_fields(server_url):
    out = _generate(
        server_url, text=PROMPT, sampling_params={"max_new_tokens": 8, "temperature": 0}
    ).json()
    assert set(out) == {"text", "output_ids", "meta_info"}
    meta = out["meta_info"]
    assert {"id", "finish_reason", "prompt_tokens", "completion_tokens", "cached_tokens"} <= set(
        meta
    )
    assert meta["finish_reason"] == {"type": "length", "length": 8}
    assert len(out["output_ids"]) == 8


def test_prefill_only_request(server_url):
    out = _generate(server_url, text=PROMPT, sampling_params={"max_new_tokens": 0}).json()
    assert out["text"] == "" and out["output_ids"] == []
    assert out["meta_info"]["prompt_tokens"] == 5
    assert out["meta_info"]["finish_reason"]["type"] == "length"


def test_batched_text_list_with_prompt_logprobs_and_text(server_url):
    """The request shape of the frontend's `select`: batched texts, max_new_tokens 0, prompt
    logprobs with token text from a start position."""
    choices = [PROMPT + " Paris", PROMPT + " London"]
    outs = _generate(
        server_url,
        text=choices,
        sampling_params={"max_new_tokens": 0, "temperature": 0},
        return_logprob=True,
        return_text_in_logprobs=True,
        logprob_start_len=3,
    ).json()
    assert isinstance(outs, list) and len(outs) == 2
    for out in outs:
        entries = out["meta_info"]["input_token_logprobs"]
        assert entries[0][0] is None
        assert all(isinstance(e[2], str) for e in entries)
        assert len(entries) == out["meta_info"]["prompt_tokens"] - 3
        assert out["meta_info"]["output_token_logprobs"] == []
    paris = outs[0]["meta_info"]["input_token_logprobs"][-1]
    london = outs[1]["meta_info"]["input_token_logprobs"][-1]
    assert paris[2] == " Paris" and london[2] == " London" and paris[0] > london[0]


def test_generate_input_ids_and_sampling_params_list(server_url):
    outs = _generate(
        server_url,
        input_ids=[[504, 3575], [19556]],
        sampling_params=[{"max_new_tokens": 2}, {"max_new_tokens": 3}],
    ).json()
    assert [len(o["output_ids"]) for o in outs] == [2, 3]


def test_stream_is_cumulative_and_ends_with_done(server_url):
    body = {
        "text": PROMPT,
        "sampling_params": {"max_new_tokens": 10, "temperature": 0},
        "stream": True,
    }
    with httpx.stream("POST", f"{server_url}/generate", json=body, timeout=60) as resp:
        frames = resp.read().decode().split("\n\n")
    assert frames[-2] == "data: [DONE]"
    texts = [json.loads(f[6:])["text"] for f in frames[:-2]]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
    full = _generate(server_url, **{**body, "stream": False}).json()
    assert texts[-1] == full["text"]


def test_bad_native_input(server_url):
    assert _generate(server_url, sampling_params={"max_new_tokens": 2}).status_code == 400
    resp = _generate(server_url, text="x", sampling_params={"temperature": -3})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "sampling_params.temperature"
    assert _generate(server_url, text="x", sampling_params={"bogus": 1}).status_code == 400


def test_flush_cache_and_abort_request(server_url):
    assert httpx.post(f"{server_url}/flush_cache").status_code == 200
    stats = wait_idle(server_url)
    assert stats["kv_free"] == stats["kv_total"]
    assert httpx.post(f"{server_url}/abort_request", json={"rid": "none"}).status_code == 200
    assert httpx.post(f"{server_url}/abort_request", json={}).status_code == 400


async def _drop_streams(url: str, count: int, after: float) -> None:
    body = {
        "prompt": "Write a very long story about the sea.",
        "max_tokens": 2000,
        "temperature": 0.8,
        "stream": True,
        "ignore_eos": True,
    }

    async def one(client: httpx.AsyncClient) -> None:
        try:
            async with asyncio.timeout(after):
                async with client.stream("POST", f"{url}/v1/completions", json=body) as resp:
                    async for _ in resp.aiter_bytes():
                        pass
        except TimeoutError:
            pass  # the client walks away mid-stream

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=count)) as c:
        await asyncio.gather(*(one(c) for _ in range(count)))


def test_disconnect_flood_frees_everything(server_url):
    # 100 long streams dropped after 0.5 s (past the queue cap some are refused at once).
    asyncio.run(_drop_streams(server_url, count=100, after=0.5))
    stats = wait_idle(server_url, timeout=10)
    assert stats["kv_protected"] == 0
    assert stats["kv_free"] + stats["kv_evictable"] == stats["kv_total"]
    start = time.time()
    out = _generate(server_url, text=PROMPT, sampling_params={"max_new_tokens": 4})
    assert out.status_code == 200 and time.time() - start < 10


def test_dropped_non_streaming_request_is_aborted(server_url):
    with contextlib.suppress(httpx.TimeoutException):
        httpx.post(
            f"{server_url}/generate",
            timeout=0.5,
            json={
                "text": "Count to a thousand:",
                "sampling_params": {"max_new_tokens": 3000, "ignore_eos": True},
            },
        )
    wait_idle(server_url, timeout=10)


class _NeverLoads(EngineHolder):
    def start(self) -> None:  # the auth and health paths need no model
        pass


@pytest.fixture(scope="module")
def keyed_app():
    settings = ServerSettings(engine=EngineConfig(), api_keys=("s3cret",))
    return create_app(settings, _NeverLoads(settings.engine))


def test_api_key_guards_every_route_but_health_and_the_dashboard_shell(keyed_app):
    async def check():
        transport = httpx.ASGITransport(app=keyed_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            assert (await c.get("/health")).status_code == 503  # loading, but not guarded
            for path in SHELL_FILES:  # static files without server data (test_dashboard.py)
                assert (await c.get(path)).status_code == 200
            for route in keyed_app.routes:
                path = getattr(route, "path", "")
                if path == "/health" or path in SHELL_FILES or not path:
                    continue
                for method in sorted(getattr(route, "methods", {"GET"}) - {"HEAD"}):
                    url = path.replace("{model_id:path}", "x")
                    for headers in ({}, {"Authorization": "Bearer wrong"}):
                        resp = await c.request(method, url, headers=headers)
                        assert resp.status_code == 401, (method, path)
            ok = await c.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
            assert ok.status_code == 503  # past auth; the model is not loaded

    asyncio.run(check())
