"""Run one workload on one open system and measure it.

The batch runs the way `run_batch` does (the program's constant prefix is cached first when the
backend caches, then a thread pool runs one program per argument dict), but each program is
timed: latency = from `program.run` to the end of its last generation. Every program runs with
`temperature=0`. Before the batch the system's cache is flushed, so every hit comes from the
workload itself.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import radixgen as sgl
from benchmarks.servers import log
from benchmarks.workloads.base import Args, Workload
from benchmarks.workloads.metrics import RunResult, optimal_hit_rate, percentile
from benchmarks.workloads.systems import OpenSystem, SystemSpec
from radixgen.lang.global_config import global_config
from radixgen.lang.state import ProgramState


def _run_one(workload: Workload, backend: Any, args: Args) -> tuple[ProgramState, float]:
    start = time.perf_counter()
    state = workload.program.run(backend=backend, temperature=0, **args)
    state.sync()
    return state, time.perf_counter() - start


def _failure(state: ProgramState, workload: Workload, args: Args) -> str:
    """Why a finished program is wrong ("" if it is fine)."""
    if state.error() is not None:
        return f"{type(state.error()).__name__}: {state.error()}"
    try:
        workload.check(state, args)
    except Exception as exc:  # the checker's AssertionError, or a ProgramError from a read
        return f"{type(exc).__name__}: {exc}"
    return ""


def run_batch_timed(
    workload: Workload, backend: Any, batch: list[Args], parallel: int
) -> tuple[list[tuple[ProgramState, float]], float]:
    """Every program of `batch`, `parallel` at a time; (state, latency) pairs and wall time."""
    start = time.perf_counter()
    if global_config.enable_precache_with_tracing and len(batch) > 1:
        workload.program.cache(backend=backend)  # as run_batch: a no-op without a cache
    with ThreadPoolExecutor(max(1, min(parallel, len(batch)))) as pool:
        futures = [pool.submit(_run_one, workload, backend, args) for args in batch]
        results = [f.result() for f in futures]
    return results, time.perf_counter() - start


@sgl.function
def _warm_up_program(s):
    s += "Say hello." + sgl.gen("reply", max_tokens=4)


def warm_up(system: OpenSystem) -> None:
    """One short program (first-call costs out of the measurements), then an empty cache."""
    state = _warm_up_program.run(backend=system.backend, temperature=0)
    state.sync()
    if state.error() is not None:
        raise RuntimeError(f"{system.spec.label}: warm-up failed: {state.error()}")
    system.flush_cache()


def _delta(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, float]:
    if before is None or after is None:
        return {}
    return {k: after[k] - before[k] for k in after}


def unavailable_result(workload: Workload, spec: SystemSpec) -> RunResult | None:
    """The n/a row when the system cannot run the workload (lacks a feature), else None."""
    reason = spec.unavailable_reason(workload.name, workload.needs)
    return RunResult(workload.name, spec.key, status=reason) if reason else None


def run_workload(workload: Workload, system: OpenSystem, size: str) -> RunResult:
    """Measure `workload` at `size` on `system` (n/a when the system lacks a feature)."""
    unavailable = unavailable_result(workload, system.spec)
    if unavailable is not None:
        return unavailable
    result = RunResult(workload.name, system.spec.key)
    batch = workload.make_args(size)
    system.flush_cache()
    system.log.reset()
    before = system.counters()
    log(f"{system.spec.label}: {workload.name} ({len(batch)} programs)")
    runs, wall = run_batch_timed(workload, system.backend, batch, system.spec.parallel)
    counters = _delta(before, system.counters())

    failures = [
        _failure(state, workload, args) for (state, _), args in zip(runs, batch, strict=True)
    ]
    result.programs = len(batch)
    result.failed_programs = sum(1 for f in failures if f)
    result.first_failure = next((f for f in failures if f), "")[:300]
    result.wall_s = wall
    result.programs_per_s = len(batch) / wall
    latencies = [latency for _, latency in runs]
    result.latency_p50_s = percentile(latencies, 50)
    result.latency_p99_s = percentile(latencies, 99)

    requests = system.log.requests()
    result.requests = len(requests)
    result.generated_tokens = sum(r.completion_tokens for r in requests)
    result.generated_tok_per_s = result.generated_tokens / wall
    optimal = optimal_hit_rate(system.log.token_ids(system.tokenize))
    result.prompt_tokens = optimal.prompt_tokens
    result.optimal_hit_rate = optimal.bounded
    result.optimal_unbounded = optimal.unbounded
    result.counters = counters
    if counters.get("prompt_tokens"):
        result.hit_rate = counters["cached_tokens"] / counters["prompt_tokens"]
        if counters["prompt_tokens"] != optimal.prompt_tokens:
            log(
                f"warning: engine counted {counters['prompt_tokens']:.0f} prompt tokens, the "
                f"request log {optimal.prompt_tokens}"
            )
    if result.failed_programs:
        log(f"{workload.name}: {result.failed_programs} programs failed: {result.first_failure}")
    return result
