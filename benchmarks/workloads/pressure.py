"""Memory-pressure mode: the paper's scheduling ablation with a KV pool too small for the
workload, so the order in which the scheduler admits requests decides what stays cached.

    python -m benchmarks.workloads --pressure [FRACTION] [--policies lpm,dfs-weight,fcfs] ...

With the default 65,536-token pool nothing is ever evicted at the suite's sizes, so every
schedule reaches the same hit rate. Here each workload runs on engines whose pool holds only
`FRACTION` (default 0.25) of the workload's distinct prompt tokens:

1. A sizing pass runs every workload once on radixgen as usual (lpm, the default pool); this is
   also the unpressured reference of the report. From the requests it sent (`RequestLog`):

   * distinct prompt tokens = the size of a token trie of every prompt the workload sent (its
     first calls, fork commits, the later calls that re-send earlier answers, `select`
     scoring): a shared few-shot prefix counts once, each question's own text once. It is
     the KV an unbounded cache holds to serve every prompt from the longest prefix computed
     before (the optimal hit rate of `metrics.optimal_hit_rate`, outputs aside);
   * the floor = the most KV one request reserves, prompt + `max_new_tokens` (the engine
     refuses a request that does not fit the pool alone, and runs any request that does,
     retracting the others), plus `FLOOR_MARGIN` for prompts that re-send a slightly longer
     answer than in the sizing pass.

   pool = max(round(FRACTION x distinct prompt tokens), floor).
2. Rounds: workload by workload, an engine per policy (`schedule_policy` lpm, dfs-weight,
   fcfs) with that pool, started, warmed up, run on the workload and stopped; the policy
   order reverses every other round; each (workload, policy) keeps its median round and
   ratios are medians of per-round ratios, as in the suite's `--repeat N --interleave`.
   Programs run `ENGINE_PARALLEL` (64) at a time, as usual: every program of tree of thought
   and the judge is in flight at once, and half of MMLU's, all competing for the pool.

The report gives per workload the pool, and per policy the hit rate (cached / prompt tokens),
programs/s, evicted tokens and retractions (the engine's counters over the run), and from a
`SchedulerTrace` of each run the cached prefix tokens requests lost while they waited (evicted
between their arrival and their admission: what a cache-aware order exists to prevent) and the
mean wait. A prefix evicted *before* the request that reuses it arrives (a program's next call
comes a round trip after its previous one finished, and the scheduler meanwhile admits other
programs' prompts) is beyond any queue order: it shows as a lower hit rate without tokens lost
while waiting (`python -m benchmarks.workloads.pressure_trace` prints the batches).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.servers import log
from benchmarks.workloads import WORKLOADS
from benchmarks.workloads.base import Workload
from benchmarks.workloads.metrics import RunResult, median_round, paired_ratio, round_ratios
from benchmarks.workloads.recording import TokenizedRequest
from benchmarks.workloads.runner import run_workload, warm_up
from benchmarks.workloads.scheduler_trace import SchedulerTrace
from benchmarks.workloads.systems import ALL, ENGINE_PARALLEL, SPECS, SystemSpec, open_system

DEFAULT_FRACTION = 0.25
POLICIES = ("lpm", "dfs-weight", "fcfs")
FLOOR_MARGIN = 32
PREFIX_HEAVY = ("mmlu", "tot", "judge")  # issue 27: cache-aware must beat FCFS on these
REFERENCE = "radixgen"  # the sizing pass: lpm with the default pool
TRACED = ("lost_while_waiting", "requests_that_lost", "mean_wait_steps")
"""SchedulerTrace totals kept with each policy run's counters: prompt tokens that were cached
when a request first waited but evicted before it was admitted, how many requests lost some,
and the mean wait in scheduler steps."""
DASH = "—"


@dataclass(frozen=True)
class PoolSize:
    """A workload's pressured pool and what it was computed from."""

    distinct_tokens: int
    """Distinct prompt tokens: nodes of a token trie over every prompt the workload sent."""
    largest_request: int
    """The most KV one request reserves: its prompt + its max_new_tokens."""
    fraction: float
    tokens: int
    """The pool: max(round(fraction x distinct_tokens), largest_request + FLOOR_MARGIN)."""

    @property
    def floored(self) -> bool:
        """The floor, not the fraction, set the pool."""
        return self.tokens > round(self.fraction * self.distinct_tokens)


def distinct_prompt_tokens(requests: Iterable[TokenizedRequest]) -> int:
    """How many distinct (prefix, token) positions the prompts hold: the node count of a trie
    of their token ids (a prefix shared by many prompts counts once)."""
    root: dict[int, dict] = {}
    nodes = 0
    for request in requests:
        node = root
        for token in request.prompt:
            child = node.get(token)
            if child is None:
                child = node[token] = {}
                nodes += 1
            node = child
    return nodes


def largest_request(requests: Iterable[TokenizedRequest]) -> int:
    """The most KV slots one request reserves: prompt + max_new_tokens (its completion when
    the budget was not recorded)."""
    sizes = [
        len(r.prompt) + (r.max_new_tokens if r.max_new_tokens is not None else len(r.output))
        for r in requests
    ]
    return max(sizes, default=0)


def pool_size(requests: Sequence[TokenizedRequest], fraction: float) -> PoolSize:
    """The pressured pool for a workload that sent `requests` (see the module doc)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    distinct = distinct_prompt_tokens(requests)
    largest = largest_request(requests)
    tokens = max(round(fraction * distinct), largest + FLOOR_MARGIN)
    return PoolSize(distinct, largest, fraction, tokens)


def policy_spec(policy: str, pool: int) -> SystemSpec:
    """radixgen with `schedule_policy=policy` and a `pool`-token KV pool."""
    return SystemSpec(
        policy,
        f"{policy}, {pool:,}-token pool",
        ALL,
        ENGINE_PARALLEL,
        engine_options={"schedule_policy": policy, "kv_cache_tokens": pool},
    )


@dataclass
class PressureRun:
    fraction: float
    policies: list[str]
    reference: dict[str, RunResult]
    """The sizing pass, by workload: lpm on the default pool."""
    pools: dict[str, PoolSize]
    results: list[RunResult]
    """Median rounds, workload-major, policies in `policies` order."""


def _guarded(name: str, key: str, run: Any) -> RunResult:
    try:
        return run()
    except Exception as exc:  # report it in the table, go on with the next one
        log(f"{name} on {key} failed: {exc!r}")
        return RunResult(name, key, status=f"failed: {exc!r}"[:300])


def size_pools(
    names: list[str], size: str, log_dir: Path, fraction: float
) -> tuple[dict[str, RunResult], dict[str, PoolSize]]:
    """The sizing pass: every workload once on radixgen (one engine, default pool); its
    results and, for the workloads that ran cleanly, their pressured pools."""
    reference: dict[str, RunResult] = {}
    pools: dict[str, PoolSize] = {}
    try:
        with open_system(REFERENCE, log_dir) as system:
            warm_up(system)
            for name in names:
                result = _guarded(
                    name, REFERENCE, lambda n=name: run_workload(WORKLOADS[n], system, size)
                )
                reference[name] = result
                if result.ok and not result.failed_programs:
                    pools[name] = pool_size(system.log.token_ids(system.tokenize), fraction)
                    log(f"{name}: pressured pool {pools[name]}")
    except Exception as exc:
        log(f"sizing pass failed: {exc!r}")
    for name in names:
        reference.setdefault(name, RunResult(name, REFERENCE, status="failed: sizing pass"))
    return reference, pools


def run_pressure(
    names: list[str],
    size: str,
    log_dir: Path,
    repeat: int,
    fraction: float = DEFAULT_FRACTION,
    policies: Sequence[str] = POLICIES,
) -> PressureRun:
    """The sizing pass, then `repeat` rounds of every policy on every sized workload."""
    reference, pools = size_pools(names, size, log_dir, fraction)
    rounds: dict[tuple[str, str], list[RunResult]] = {}
    for number in range(repeat):
        if repeat > 1:
            log(f"pressure round {number + 1} of {repeat}")
        order = list(policies) if number % 2 == 0 else list(policies)[::-1]
        for name in names:
            for policy in order:
                if name not in pools:
                    result = RunResult(name, policy, status="failed: no pool (sizing failed)")
                else:
                    result = _run_policy(name, policy, pools[name], size, log_dir)
                rounds.setdefault((name, policy), []).append(result)
    results = [median_round(rounds[(n, p)]) for n in names for p in policies]
    return PressureRun(fraction, list(policies), reference, pools, results)


def _run_policy(name: str, policy: str, pool: PoolSize, size: str, log_dir: Path) -> RunResult:
    spec = policy_spec(policy, pool.tokens)
    started = time.perf_counter()

    def run() -> RunResult:
        with open_system(policy, log_dir, spec) as system:
            warm_up(system)
            trace = SchedulerTrace()
            trace.install(system.engine)
            result = run_workload(WORKLOADS[name], system, size)
        summary = trace.summary()
        for key in TRACED:
            result.counters[key] = summary[key]
        return result

    result = _guarded(name, policy, run)
    log(f"{name} on {spec.label}: {time.perf_counter() - started:.0f}s")
    return result


# --- report ------------------------------------------------------------------------------


def _fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return DASH if x is None else format(x, spec) + suffix


def _pct(x: float | None) -> str:
    return _fmt(None if x is None else 100 * x, ".1f", "%")


def _hit_and_speed(r: RunResult | None) -> str:
    if r is None:
        return DASH
    if not r.ok:
        return "failed"
    return f"{_pct(r.hit_rate)} / {_fmt(r.programs_per_s, '.2f')}"


def _count(r: RunResult, key: str) -> str:
    value = r.counters.get(key)
    return DASH if value is None else f"{value:,.0f}"


def _decode(r: RunResult) -> str:
    """Decode steps and generated tokens per step: a small pool decodes fewer requests at
    once, which costs throughput beyond the recomputed prefixes."""
    steps = r.counters.get("decode_steps")
    if not steps:
        return DASH
    return f"{steps:,.0f} ({r.counters.get('generated_tokens', 0) / steps:.1f})"


def _lost(r: RunResult) -> str:
    if r.counters.get("lost_while_waiting") is None:
        return DASH
    return f"{_count(r, 'lost_while_waiting')} / {_count(r, 'requests_that_lost')}"


def summary_table(run: PressureRun, workloads: Sequence[Workload]) -> list[str]:
    """Per workload: the pool, the unpressured hit rate and speed, each policy's, and the
    cache-aware policies' paired throughput ratios over FCFS."""
    by = {(r.workload, r.system): r for r in run.results}
    aware = [p for p in run.policies if p != "fcfs"]
    head = ["workload", "pool (distinct prompt tok, largest request)"]
    head += [f"{p}: hit rate / prog/s" for p in ("lpm, unpressured", *run.policies)]
    if "fcfs" in run.policies:
        head += [f"{p} / fcfs (prog/s)" for p in aware]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for w in workloads:
        pool = run.pools.get(w.name)
        pool_cell = DASH
        if pool is not None:
            floor = " (floor)" if pool.floored else ""
            pool_cell = (
                f"{pool.tokens:,}{floor} ({pool.distinct_tokens:,}, {pool.largest_request:,})"
            )
        cells = [w.title, pool_cell, _hit_and_speed(run.reference.get(w.name))]
        cells += [_hit_and_speed(by.get((w.name, p))) for p in run.policies]
        if "fcfs" in run.policies:
            fcfs = by.get((w.name, "fcfs"))
            cells += [_fmt(paired_ratio(by.get((w.name, p)), fcfs), ".2f", "x") for p in aware]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def detail_table(run: PressureRun, workloads: Sequence[Workload]) -> list[str]:
    """Every policy run: throughput by round, hit rate, what it prefilled, evicted, retracted."""
    lines = [
        "| workload | policy | programs/s | rounds (prog/s) | hit rate | optimal | "
        "prefill tok | evicted tok | retractions | lost while waiting (tok / requests) | "
        "mean wait (steps) | decode steps (mean batch) | latency p50 / p99 (s) | failed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by = {(r.workload, r.system): r for r in run.results}
    for w in workloads:
        rows = [run.reference.get(w.name)] + [by.get((w.name, p)) for p in run.policies]
        for r in rows:
            if r is None or not r.ok:
                continue
            label = "lpm, unpressured" if r.system == REFERENCE else r.system
            rounds = ", ".join(
                "failed" if x is None else f"{x:.2f}" for x in r.round_programs_per_s
            )
            cells = [
                w.title,
                label,
                _fmt(r.programs_per_s, ".2f"),
                rounds,
                _pct(r.hit_rate),
                _pct(r.optimal_hit_rate),
                _count(r, "prefill_tokens"),
                _count(r, "evicted_tokens"),
                _count(r, "retractions"),
                _lost(r),
                _fmt(r.counters.get("mean_wait_steps"), ".1f"),
                _decode(r),
                f"{_fmt(r.latency_p50_s, '.2f')} / {_fmt(r.latency_p99_s, '.2f')}",
                f"{r.failed_programs}/{r.programs}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def verdicts(run: PressureRun, workloads: Sequence[Workload]) -> list[str]:
    """Issue 27's check on the prefix-heavy workloads: does each cache-aware policy beat FCFS
    in hit rate and in (paired) throughput?"""
    by = {(r.workload, r.system): r for r in run.results}
    out = []
    for w in workloads:
        if w.name not in PREFIX_HEAVY or "fcfs" not in run.policies:
            continue
        fcfs = by.get((w.name, "fcfs"))
        for policy in (p for p in run.policies if p != "fcfs"):
            r = by.get((w.name, policy))
            if r is None or fcfs is None or not r.ok or not fcfs.ok or r.hit_rate is None:
                out.append(f"- {w.title}, {policy} vs fcfs: not measured")
                continue
            ratio = paired_ratio(r, fcfs)
            per_round = round_ratios(r, fcfs)
            rounds = (
                f" (rounds {', '.join(f'{x:.2f}' for x in per_round)})"
                if len(per_round) > 1
                else ""
            )
            hit_ok = r.hit_rate > (fcfs.hit_rate or 0)
            speed_ok = ratio is not None and ratio > 1
            verdict = "holds" if hit_ok and speed_ok else "DOES NOT HOLD"
            out.append(
                f"- {w.title}, {policy} vs fcfs: hit rate {_pct(r.hit_rate)} vs "
                f"{_pct(fcfs.hit_rate)}, throughput {_fmt(ratio, '.2f', 'x')}{rounds}: {verdict}"
            )
    return out


def markdown(
    run: PressureRun,
    workloads: Sequence[Workload],
    size: str,
    info: dict[str, Any],
    command: str,
    repeat: int,
) -> str:
    """The pressure report: setup, summary, details, verdicts."""
    rounds = ""
    if repeat > 1:
        rounds = (
            f" The policies ran {repeat} rounds, their order reversed every other round; "
            "throughputs are medians, ratios medians of per-round ratios."
        )
    flags = f" ({info['cpu_flags']})" if info.get("cpu_flags") else ""
    lines = [
        f"`{command}` ({info['date']}, size `{size}`). Hardware: {info['cpu']}{flags}, "
        f"{info['cores']} cores, torch {info['torch']} CPU, radixgen in "
        f"{info.get('dtype', 'float32')}. Model: SmolLM2-135M-Instruct Q4_1 GGUF. All programs "
        f"greedy, {ENGINE_PARALLEL} in flight.",
        "",
        f"Memory pressure: each workload's KV pool holds {run.fraction:g} of its distinct "
        "prompt tokens (the node count of a token trie over every prompt it sent in an "
        f"unpressured lpm run on the default {SPECS[REFERENCE].label} pool), never less than its "
        f"largest request (prompt + max_new_tokens) + {FLOOR_MARGIN}. Each policy ran on its own "
        f"engine with that pool, workload by workload.{rounds}",
        "",
        *summary_table(run, workloads),
        "",
        *detail_table(run, workloads),
        "",
        "Cache-aware vs FCFS on the prefix-heavy workloads:",
        "",
        *verdicts(run, workloads),
    ]
    failed = [
        r
        for r in [*run.reference.values(), *run.results]
        if not r.ok and not r.status.startswith("n/a")
    ]
    if failed:
        lines += ["", "Failed runs:", ""]
        lines += [f"- {r.workload} on {r.system}: {r.status}" for r in failed]
    return "\n".join(lines) + "\n"


def payload(run: PressureRun) -> dict[str, Any]:
    """The pressure run as JSON-ready data."""
    as_dict = lambda r: {**dataclasses.asdict(r), "hit_vs_optimal": r.hit_vs_optimal}
    return {
        "fraction": run.fraction,
        "policies": run.policies,
        "pools": {name: dataclasses.asdict(pool) for name, pool in run.pools.items()},
        "reference": {name: as_dict(r) for name, r in run.reference.items()},
        "results": [as_dict(r) for r in run.results],
    }
