"""Why a schedule wins or loses under memory pressure: trace the scheduler's admissions.

    python -m benchmarks.workloads.pressure_trace --workload judge [--programs 4]
        [--fraction 0.25] [--policies lpm,dfs-weight,fcfs] [--log]

Runs `--programs` programs of the workload's full size (evenly spaced, in their order), sizes
the pool as `--pressure` does (an unpressured run first, pressure.pool_size), then runs each
policy on an engine with that pool while a `SchedulerTrace` watches its scheduler:

* when a request first waits, how much of its prompt the cache holds (read without touching
  the tree: no split, no LRU refresh);
* when it is admitted, how much it reuses (`cached_tokens`), after how many scheduler steps,
  and at which place of the policy's order;
* how many tokens each eviction freed.

Per policy it prints the totals that decide the hit rate: prefix tokens cached when a request
arrived but evicted before it was admitted ("lost while waiting"), tokens that became cached
while it waited (a sibling computed them first: "gained while waiting"), evictions, the mean
wait; with `--log`, every prefill batch. Diagnostic only: nothing is recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.servers import log
from benchmarks.workloads import WORKLOADS
from benchmarks.workloads.base import Workload
from benchmarks.workloads.pressure import (
    DEFAULT_FRACTION,
    POLICIES,
    REFERENCE,
    PoolSize,
    policy_spec,
    pool_size,
)
from benchmarks.workloads.runner import run_workload, warm_up
from benchmarks.workloads.scheduler_trace import SchedulerTrace
from benchmarks.workloads.systems import open_system


def subset(workload: Workload, programs: int | None) -> Workload:
    """`workload` at its full size, cut to `programs` evenly spaced programs (order kept)."""
    args = workload.make_args("full")
    if programs is not None and programs < len(args):
        step = len(args) / programs
        args = [args[int(i * step)] for i in range(programs)]
    return dataclasses.replace(workload, make_args=lambda size: list(args))


def trace_policies(
    workload: Workload, fraction: float, policies: list[str], log_dir: Path
) -> tuple[PoolSize, dict[str, SchedulerTrace], dict[str, Any]]:
    """Size the pool on an unpressured run, then trace every policy on that pool."""
    with open_system(REFERENCE, log_dir) as system:
        warm_up(system)
        reference = run_workload(workload, system, "full")
        pool = pool_size(system.log.token_ids(system.tokenize), fraction)
    log(f"{workload.name}: {pool}")
    traces, results = {}, {"unpressured": reference}
    for policy in policies:
        with open_system(policy, log_dir, policy_spec(policy, pool.tokens)) as system:
            warm_up(system)
            traces[policy] = SchedulerTrace()
            traces[policy].install(system.engine)
            results[policy] = run_workload(workload, system, "full")
    return pool, traces, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.workloads.pressure_trace",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workload", required=True, choices=list(WORKLOADS))
    parser.add_argument("--programs", type=int, help="evenly spaced programs of the full size")
    parser.add_argument("--fraction", type=float, default=DEFAULT_FRACTION)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--log", action="store_true", help="print every prefill batch")
    args = parser.parse_args(argv)
    workload = subset(WORKLOADS[args.workload], args.programs)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    with tempfile.TemporaryDirectory(prefix="radixgen-trace-") as log_dir:
        pool, traces, results = trace_policies(workload, args.fraction, policies, Path(log_dir))
    print(
        f"{workload.title}, {len(workload.make_args('full'))} programs: pool {pool.tokens:,} "
        f"tokens ({pool.fraction:g} of {pool.distinct_tokens:,} distinct prompt tokens; largest "
        f"request {pool.largest_request:,})"
    )
    for name, r in results.items():
        c = r.counters
        print(
            f"  {name}: {r.status}, hit rate {100 * (r.hit_rate or 0):.1f}%, "
            f"{r.programs_per_s or 0:.2f} prog/s, prefill {c.get('prefill_tokens', 0):,.0f} tok, "
            f"evicted {c.get('evicted_tokens', 0):,.0f}, retractions {c.get('retractions', 0):.0f}"
            f"; engine: prefill {c.get('prefill_seconds', 0):.1f} s, decode "
            f"{c.get('decode_seconds', 0):.1f} s in {c.get('decode_steps', 0):,.0f} steps"
        )
    for policy, trace in traces.items():
        print(f"{policy}: " + ", ".join(f"{k} {v:,.1f}" for k, v in trace.summary().items()))
        if args.log:
            print("\n".join("    " + line for line in trace.batch_log()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
