"""Router benchmark: radixgen workers behind SGLang's router, cache-aware vs round-robin routing.

    python -m benchmarks.bench_router [--prefixes 8] [--questions 16] [--concurrency 8]
        [--max-new-tokens 4] [--seed 1234] [--no-record]

Workload: a few-shot style one. `--prefixes` distinct long prefixes (each ~400-600 tokens of
few-shot "Q:/A:" text generated deterministically from the seed, from a fixed word list) x
`--questions` short questions each; the prompts are shuffled with the seed and sent through
`POST /generate` (greedy, `max_new_tokens`, `ignore_eos`), at most `--concurrency` in flight.

Configurations, measured in one run (each starts fresh processes and stops them afterwards):
(A) `radixgen serve --dp 2` style: the router (`cache_aware`) in front of 2 workers x 1 thread;
(B) the same with the router's `round_robin` policy;
(C) one worker with 2 threads, addressed directly (no router).
Before each workload every worker gets one short warm-up request and then `POST /flush_cache`,
so every hit counted comes from the workload.

Metrics: requests/s = requests / wall time (first send to last reply); p50/p99 latency of one
request (client clock, includes queueing); aggregate cache hit rate = sum over the workers of
the delta of `cached_tokens` / the delta of `prompt_tokens` from `/get_server_info`. Ratios the
targets of issue 25 name: cache_aware hit rate / single-worker hit rate (target >= 95%) and
cache_aware req/s / round_robin req/s (target >= 1.3x). Progress goes to stderr; the report
to stdout and, unless `--no-record`, to a record docs/benchmarks/router-<date>[-N].md
(benchmarks/record.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks import record
from benchmarks.servers import (
    ServerSpec,
    flush_cache,
    log,
    python_bin,
    running_server,
    server_counters,
)
from benchmarks.stats import percentile
from radixgen.deploy import ScaleOut, ScaleOutConfig
from radixgen.launcher import free_port

MODEL = "smollm2"
WORKER_ARGS = ("--log-level", "warning", "--kv-cache-tokens", "65536")
REQUEST_TIMEOUT_S = 600.0

# A fixed vocabulary: the generated few-shot text is the same on every machine and run.
_VOCABULARY = (
    "river mountain engine garden lantern copper violet harbor meadow signal orbit canyon "
    "velvet marble thunder compass falcon glacier ember prism quartz saddle timber willow "
    "anchor basket candle desert feather granite island jungle kettle ladder mirror needle "
    "oyster pepper quiver ribbon shadow tunnel umbrella valley wagon yarrow zephyr bridge "
    "castle dragon forest hammer island jacket knight lemon magnet nectar ocean pillow "
    "rocket silver tiger violin walnut basalt cedar dune ferry grove hollow inlet juniper"
)
WORDS = _VOCABULARY.split()
QUESTION_TOPICS = ("colour", "weight", "origin", "purpose", "age", "shape", "sound", "size")


# --- workload ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    prefix: int
    question: int
    text: str


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def few_shot_prefix(index: int, seed: int, examples: int = 12) -> str:
    """One distinct few-shot prefix (~400-600 tokens): a task line and `examples` Q/A pairs."""
    rng = random.Random(f"{seed}-prefix-{index}")
    lines = [f"Task {index}: answer each question about the {rng.choice(WORDS)} archive."]
    for _ in range(examples):
        lines.append(f"Q: {_sentence(rng, rng.randint(10, 14))}")
        lines.append(f"A: {_sentence(rng, rng.randint(12, 18))}")
    return "\n".join(lines) + "\n"


def build_workload(prefixes: int, questions: int, seed: int) -> list[Request]:
    """prefixes x questions requests (each a prefix + one short question), shuffled with seed."""
    requests = []
    for p in range(prefixes):
        prefix = few_shot_prefix(p, seed)
        rng = random.Random(f"{seed}-questions-{p}")
        for q in range(questions):
            topic = QUESTION_TOPICS[q % len(QUESTION_TOPICS)]
            ask = f"Q: What is the {topic} of the {rng.choice(WORDS)} {rng.choice(WORDS)}?\nA:"
            requests.append(Request(p, q, prefix + ask))
    random.Random(seed).shuffle(requests)
    return requests


# --- running one configuration ----------------------------------------------------------------


@dataclass
class Result:
    name: str
    requests: int = 0
    errors: int = 0
    wall_s: float = 0.0
    latencies: tuple[float, ...] = ()
    prompt_tokens: int = 0
    cached_tokens: int = 0

    @property
    def req_per_s(self) -> float | None:
        return self.requests / self.wall_s if self.wall_s else None

    @property
    def hit_rate(self) -> float | None:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None


async def _send_all(url: str, requests: list[Request], concurrency: int, max_new: int) -> tuple:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors = 0

    async def one(client: httpx.AsyncClient, req: Request) -> None:
        nonlocal errors
        body = {
            "text": req.text,
            "sampling_params": {
                "temperature": 0.0,
                "max_new_tokens": max_new,
                "ignore_eos": True,
            },
        }
        async with gate:
            start = time.perf_counter()
            try:
                reply = await client.post(f"{url}/generate", json=body)
                reply.raise_for_status()
            except httpx.HTTPError as exc:
                errors += 1
                log(f"request failed: {exc!r}")
                return
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(one(client, r) for r in requests))
        wall = time.perf_counter() - start
    return latencies, errors, wall


def _prepare(worker_urls: list[str]) -> None:
    """Warm every worker (one short request, not measured), then empty its radix cache."""
    for url in worker_urls:
        body = {"text": "Hello", "sampling_params": {"max_new_tokens": 2, "temperature": 0.0}}
        httpx.post(f"{url}/generate", json=body, timeout=REQUEST_TIMEOUT_S).raise_for_status()
        flush_cache(url)


def measure(
    name: str, url: str, worker_urls: list[str], requests: list[Request], args: argparse.Namespace
) -> Result:
    _prepare(worker_urls)
    before = [server_counters(u) for u in worker_urls]
    log(f"{name}: {len(requests)} requests, {args.concurrency} in flight")
    latencies, errors, wall = asyncio.run(
        _send_all(url, requests, args.concurrency, args.max_new_tokens)
    )
    after = [server_counters(u) for u in worker_urls]
    result = Result(name, len(latencies), errors, wall, tuple(latencies))
    for b, a in zip(before, after, strict=True):
        result.prompt_tokens += a.get("prompt_tokens", 0) - b.get("prompt_tokens", 0)
        result.cached_tokens += a.get("cached_tokens", 0) - b.get("cached_tokens", 0)
    log(f"{name}: {result.req_per_s:.2f} req/s, hit rate {result.hit_rate}")
    return result


@contextlib.contextmanager
def routed(policy: str) -> Iterator[ScaleOut]:
    """The router (`policy`) in front of 2 workers x 1 thread, like `radixgen serve --dp 2`."""
    config = ScaleOutConfig(
        dp=2,
        host="127.0.0.1",
        port=free_port(),
        model=MODEL,
        worker_args=WORKER_ARGS,
        num_threads=1,
        policy=policy,
    )
    deployment = ScaleOut(config, out=sys.stderr)
    deployment.start()
    try:
        yield deployment
    finally:
        deployment.stop()


def run_routed(policy: str, requests: list[Request], args: argparse.Namespace) -> Result:
    with routed(policy) as deployment:
        workers = [w.url for w in deployment.workers]
        return measure(f"router {policy}, 2 workers x 1 thread", deployment.url, workers,
                       requests, args)  # fmt: skip


def run_single(requests: list[Request], args: argparse.Namespace) -> Result:
    argv = [python_bin(), "-m", "radixgen.cli", "serve", "--host", "127.0.0.1"]
    argv += ["--num-threads", "2", *WORKER_ARGS]
    spec = ServerSpec("router_single", "single worker", tuple(argv), "/health", True)
    with (
        tempfile.TemporaryDirectory(prefix="bench-router-") as logs,
        running_server(spec, Path(logs)) as url,
    ):
        return measure("1 worker x 2 threads, no router", url, [url], requests, args)


# --- report -----------------------------------------------------------------------------------


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def _ms(r: Result, q: float) -> str:
    return _fmt(None if not r.latencies else percentile(r.latencies, q) * 1000, ".0f")


def _ratio(a: float | None, b: float | None, spec: str) -> str:
    return "n/a" if a is None or not b else format(a / b, spec)


def report(results: dict[str, Result], args: argparse.Namespace) -> str:
    """The printed report (and the record's body): workload, table, the two target ratios."""
    lines = [
        f"- Model {MODEL}, worker options `{' '.join(WORKER_ARGS)}`",
        f"- Workload: {args.prefixes} few-shot prefixes x {args.questions} questions = "
        f"{args.prefixes * args.questions} requests (seed {args.seed}), POST /generate, greedy, "
        f"max_new_tokens {args.max_new_tokens} (ignore_eos), {args.concurrency} in flight",
        "",
        "| configuration | req/s | cache hit rate | p50 latency (ms) | p99 latency (ms) "
        "| prompt tokens | cached tokens | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results.values():
        lines.append(
            f"| {r.name} | {_fmt(r.req_per_s, '.2f')} | {_fmt(r.hit_rate, '.1%')} "
            f"| {_ms(r, 50)} | {_ms(r, 99)} | {r.prompt_tokens} | {r.cached_tokens} "
            f"| {r.errors} |"
        )
    a, b, c = results["cache_aware"], results["round_robin"], results["single"]
    lines += [
        "",
        f"- cache_aware hit rate / single-worker hit rate: "
        f"{_ratio(a.hit_rate, c.hit_rate, '.1%')} (target >= 95%)",
        f"- cache_aware req/s / round_robin req/s: "
        f"{_ratio(a.req_per_s, b.req_per_s, '.2f')}x (target >= 1.3x)",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prefixes", type=int, default=8)
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1234)
    record.add_record_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = record.command_line("python -m benchmarks.bench_router", argv)
    requests = build_workload(args.prefixes, args.questions, args.seed)
    results = {
        "cache_aware": run_routed("cache_aware", requests, args),
        "round_robin": run_routed("round_robin", requests, args),
        "single": run_single(requests, args),
    }
    text = report(results, args)
    print(text)
    record.save(args, "router", "Router benchmark", text, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
