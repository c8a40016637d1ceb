"""Operations: Prometheus metrics, overload answered at once, CORS off by default."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.server.conftest import wait_idle


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_metrics_report_requests_tokens_latency_and_kv(server_url):
    httpx.post(
        f"{server_url}/generate",
        json={"text": "Hello there", "sampling_params": {"max_new_tokens": 4}},
        timeout=60,
    )
    wait_idle(server_url)
    resp = httpx.get(f"{server_url}/metrics", timeout=30)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    finished = sum(
        _metric(text, f'radixgen_requests_total{{outcome="{o}"}}')
        for o in ("stop", "length")
        if f'outcome="{o}"' in text
    )
    assert finished >= 1
    assert _metric(text, "radixgen_generation_tokens_total") >= 4
    assert _metric(text, "radixgen_time_to_first_token_seconds_count") >= 1
    assert _metric(text, "radixgen_e2e_request_latency_seconds_count") >= 1
    total = _metric(text, "radixgen_kv_total")
    assert (
        _metric(text, "radixgen_kv_free")
        + _metric(text, "radixgen_kv_evictable")
        + _metric(text, "radixgen_kv_protected")
        == total
        == 16384
    )
    assert _metric(text, "radixgen_kv_idle_invariant_ok") == 1
    assert _metric(text, "radixgen_running_requests") == 0


async def _burst_with_health_probes(url: str, count: int):
    body = {
        "text": "Write a long essay about rivers.",
        "sampling_params": {"max_new_tokens": 40, "ignore_eos": True},
    }
    async with httpx.AsyncClient(
        timeout=120, limits=httpx.Limits(max_connections=count + 1)
    ) as client:
        burst = asyncio.gather(*(client.post(f"{url}/generate", json=body) for _ in range(count)))
        await asyncio.sleep(1.0)  # the engine is saturated now
        health_seconds = []
        for _ in range(3):
            start = time.perf_counter()
            assert (await client.get(f"{url}/health")).status_code == 200
            health_seconds.append(time.perf_counter() - start)
        return await burst, health_seconds


def test_overload_is_answered_at_once_with_503_and_health_stays_responsive(server_url):
    """16 running + 40 queued is the cap; the rest of a burst of 80 is refused immediately,
    and /health keeps answering while the engine is saturated."""
    responses, health_seconds = asyncio.run(_burst_with_health_probes(server_url, 80))
    codes = [r.status_code for r in responses]
    refused = [r for r in responses if r.status_code == 503]
    assert refused and codes.count(200) >= 56 and set(codes) <= {200, 503}
    assert all(r.headers.get("retry-after") for r in refused)
    assert all(r.json()["error"]["type"] == "server_overloaded" for r in refused)
    assert max(health_seconds) < 2.0, health_seconds
    wait_idle(server_url, timeout=30)
    ok = httpx.post(
        f"{server_url}/generate",
        json={"text": "Hi", "sampling_params": {"max_new_tokens": 2}},
        timeout=30,
    )
    assert ok.status_code == 200


def test_cors_is_off_by_default(server_url):
    resp = httpx.get(f"{server_url}/v1/models", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in resp.headers
