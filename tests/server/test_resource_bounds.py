"""No request can hurt another (issue 31): resource bounds of one live server.

* After a burst of the largest allowed requests the idle server's RSS returns within 10% of its
  value before the burst: without `malloc_trim` on the scheduler's busy->idle edge, freed
  tokenizer buffers and token lists stayed resident in malloc's arenas (1.8 -> 2.8 GB here).
* /health answers within 1 s while a maximal body (just under the 8 MiB body limit) is parsed
  and tokenized by /generate: tokenizing it on the event loop stalled /health for 7-13 s.

The module starts its own server (a small KV pool and a 64-token context keep the burst cheap
on 2 cores) and watches its process; run with `-s` to see the figures. The burst stands for the
largest requests the caps allow (256 sequences per request, bodies up to 8 MiB).
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from radixgen.launcher import running_server
from radixgen.runtime.config import EngineConfig
from radixgen.server.context import ServerSettings
from tests.server.conftest import wait_idle

CONTEXT = 64
SERVER_ARGS = [
    "--dtype",
    "float32",
    "--kv-cache-tokens",
    "4096",
    "--context-length",
    str(CONTEXT),
    "--log-level",
    "warning",
    # One torch thread leaves a core to the event loop and the tokenizer, and keeps OpenMP's
    # spinning barriers from stalling when other processes load the machine.
    "--num-threads",
    "1",
]
MAX_BODY = ServerSettings(EngineConfig()).max_body_bytes
SEQUENCES = 256  # the default cap on prompts x n of one request
MAX_N = 128  # the default cap on n
RSS_SLACK = 1.10


@pytest.fixture(scope="module")
def server():
    with running_server(SERVER_ARGS) as server:
        yield server.url, server.pid


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def largest_body(make) -> bytes:
    """The largest body `make(k)` that stays under the server's body limit."""
    lo, hi = 1, 2
    while len(make(hi)) < MAX_BODY:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if len(make(mid)) < MAX_BODY else (lo, mid)
    return make(lo)


def text_body() -> bytes:
    """~8 MiB of prompt text: ~3M tokens, refused (context) only after it is tokenized."""
    return largest_body(
        lambda k: json.dumps(
            {"text": "lorem ipsum dolor sit amet " * k, "sampling_params": {"max_new_tokens": 1}}
        ).encode()
    )


def ids_body() -> bytes:
    """~1.2M token ids: the most a body can carry."""
    return largest_body(
        lambda k: json.dumps(
            {"input_ids": [i % 40000 for i in range(k)], "sampling_params": {"max_new_tokens": 1}}
        ).encode()
    )


def prompt(i: int, words: int) -> str:
    return f"Story {i}: " + " ".join(f"w{(i * 7 + j) % 997}" for j in range(words))


def post(client: httpx.Client, path: str, body) -> httpx.Response:
    if isinstance(body, bytes):
        return client.post(path, content=body, headers={"content-type": "application/json"})
    return client.post(path, json=body)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmRSS from /proc")
def test_idle_rss_returns_after_a_burst_of_the_largest_requests(server):
    url, pid = server
    with httpx.Client(base_url=url, timeout=240) as client:
        model = client.get("/v1/models").json()["data"][0]["id"]
        warm = client.post(
            "/generate", json={"text": "Hi", "sampling_params": {"max_new_tokens": 2}}
        )
        assert warm.status_code == 200, warm.text
        wait_idle(url)
        time.sleep(1.0)
        before = rss_mb(pid)

        near_context = 12  # words: 30-54 tokens of a 64-token context
        burst = [
            ("/generate", text_body(), 400),
            ("/generate", text_body(), 400),
            ("/generate", ids_body(), 400),
            (
                "/generate",
                {
                    "text": [prompt(1, near_context), prompt(2, near_context)],
                    "sampling_params": {"max_new_tokens": 2, "n": MAX_N},
                },
                200,
            ),
            (
                "/generate",
                {  # short prompts: 256 long ones would take ~30 s of prefill on one core
                    "text": [f"Note {i}:" for i in range(SEQUENCES)],
                    "sampling_params": {"max_new_tokens": 2},
                },
                200,
            ),
            (
                "/v1/chat/completions",
                {
                    "model": model,
                    "n": MAX_N,
                    "max_tokens": 2,
                    "messages": [{"role": "user", "content": prompt(3, 8)}],
                },
                200,
            ),
        ]
        started = time.perf_counter()
        with ThreadPoolExecutor(len(burst)) as pool:
            futures = [pool.submit(post, client, path, body) for path, body, _ in burst]
            for (path, _, status), future in zip(burst, futures, strict=True):
                response = future.result()
                assert response.status_code == status, (path, response.text[:300])
        burst_seconds = time.perf_counter() - started
        after = rss_mb(pid)
        wait_idle(url)
        deadline = time.perf_counter() + 5.0
        idle = rss_mb(pid)
        while idle > before * RSS_SLACK and time.perf_counter() < deadline:
            time.sleep(0.25)
            idle = rss_mb(pid)
    print(
        f"\nRSS before the burst {before:.0f} MB, right after it {after:.0f} MB, idle "
        f"{idle:.0f} MB ({idle / before - 1:+.1%}); burst took {burst_seconds:.1f} s"
    )
    assert idle <= before * RSS_SLACK, (before, after, idle)


@pytest.mark.parametrize("make_body", [text_body, ids_body], ids=["text", "input_ids"])
def test_health_answers_while_a_maximal_body_is_parsed(server, make_body):
    url, _ = server
    body = make_body()
    assert MAX_BODY - 64 < len(body) < MAX_BODY
    outcome: dict = {}

    def send() -> None:
        started = time.perf_counter()
        with httpx.Client(timeout=240) as client:
            outcome["status"] = post(client, f"{url}/generate", body).status_code
        outcome["seconds"] = time.perf_counter() - started

    sender = threading.Thread(target=send)
    sender.start()
    latencies = []
    with httpx.Client(base_url=url, timeout=30) as client:
        while sender.is_alive():
            started = time.perf_counter()
            assert client.get("/health").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
    sender.join()
    print(
        f"\n{make_body.__name__}: {len(body) / 2**20:.2f} MiB answered {outcome['status']} in "
        f"{outcome['seconds']:.2f} s; {len(latencies)} /health polls, slowest "
        f"{max(latencies):.3f} s"
    )
    assert outcome["status"] == 400  # far longer than the context
    assert max(latencies) < 1.0, sorted(latencies)[-5:]
