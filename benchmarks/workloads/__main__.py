"""The workload suite's command line.

    python -m benchmarks.workloads [--workloads mmlu,tot|all] [--systems radixgen,no-cache|all]
                                   [--size small|full] [--repeat N] [--interleave]
                                   [--out results.json] [--chart out.png]
    python -m benchmarks.workloads --pressure [FRACTION] [--policies lpm,dfs-weight,fcfs]
                                   [--workloads ...] [--size ...] [--repeat N] [--out ...]

Systems run one at a time: each is started (and warmed up), runs every chosen workload, and is
stopped before the next starts (in-process systems slow each other down while both are up).
With `--interleave` the loops swap: workload by workload, every system is started, runs that
one workload and is stopped, so the systems compared on a workload run minutes apart at most.
With `--repeat N` the whole pass runs N times, the system order reversed every other round;
each (workload, system) reports its median round and every round's throughput, and speedups
are the median of the per-round ratios (see `metrics.paired_ratio`).
Writes the results as JSON and the normalized-throughput chart (PNG, needs
`pip install -e ".[bench]"`), prints the Markdown report to stdout (progress goes to stderr)
and, unless `--no-record`, writes it with the machine's facts to a record
docs/benchmarks/workloads-<date>[-N].md (benchmarks/record.py).

With `--pressure` the suite runs the paper's scheduling ablation instead (pressure.py): each
workload's KV pool holds only FRACTION (default 0.25) of its distinct prompt tokens, and the
scheduling policies (`--policies`) run side by side on it; `--systems`, `--interleave` and
`--chart` do not apply. Its record is docs/benchmarks/workloads-pressure-<date>[-N].md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import record
from benchmarks.servers import log
from benchmarks.workloads import WORKLOADS, pressure
from benchmarks.workloads.base import SIZES
from benchmarks.workloads.metrics import RunResult, median_round
from benchmarks.workloads.report import chart, markdown
from benchmarks.workloads.runner import run_workload, unavailable_result, warm_up
from benchmarks.workloads.systems import (
    SPECS,
    OpenSystem,
    best_of_slots,
    expand_systems,
    open_system,
    peer_description,
)
from radixgen.runtime.config import auto_dtype

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _choice_list(value: str, known: dict[str, Any], what: str) -> list[str]:
    if value == "all":
        return list(known)
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; choose from {list(known)}")
    return names


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _fraction(value: str) -> float:
    number = float(value)
    if not 0 < number <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {number}")
    return number


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.workloads",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workloads",
        default="all",
        type=lambda v: _choice_list(v, WORKLOADS, "workloads"),
        help=f"comma-separated, or all: {','.join(WORKLOADS)}",
    )
    parser.add_argument(
        "--systems",
        default="all",
        type=lambda v: _choice_list(v, SPECS, "systems"),
        help=f"comma-separated, or all: {','.join(SPECS)}",
    )
    parser.add_argument("--size", choices=SIZES, default="full")
    parser.add_argument(
        "--repeat",
        type=_positive_int,
        default=1,
        help="run every system through the workloads this many times; report the median round",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="start every system once per workload, so a workload's systems run back to back",
    )
    parser.add_argument(
        "--pressure",
        nargs="?",
        const=pressure.DEFAULT_FRACTION,
        type=_fraction,
        metavar="FRACTION",
        help="memory-pressure mode: a KV pool of FRACTION (default "
        f"{pressure.DEFAULT_FRACTION}) of each workload's distinct prompt tokens, the "
        "scheduling policies side by side",
    )
    parser.add_argument(
        "--policies",
        default=",".join(pressure.POLICIES),
        type=lambda v: _choice_list(v, dict.fromkeys(pressure.POLICIES), "policies"),
        help=f"with --pressure: comma-separated, or all: {','.join(pressure.POLICIES)}",
    )
    parser.add_argument("--out", type=Path, help="results JSON (default: results/<size>.json)")
    parser.add_argument("--chart", type=Path, help="chart PNG (default: next to --out)")
    record.add_record_args(parser)
    return parser.parse_args(argv)


def machine_info() -> dict[str, Any]:
    """The machine's facts for the JSON and the report's first line (benchmarks/record.py)."""
    host = record.machine()
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": host.cpu,
        "cpu_flags": " ".join(host.flags),
        "cores": host.logical_cpus,
        "python": host.python,
        "dtype": auto_dtype("cpu"),  # what radixgen's and transformers' "auto" computes in
        "torch": host.torch,
        "llama_cpp": peer_description(),
    }


def run_rounds(
    keys: list[str],
    names: list[str],
    size: str,
    log_dir: Path,
    repeat: int,
    interleave: bool = False,
) -> list[RunResult]:
    """Run the pass `repeat` times, system order reversed in every other round (a drift of the
    machine's speed across a round then favours no system); each (workload, system) keeps its
    median round (`metrics.median_round`). A system with variants (llama.cpp's 1 and 8 slots)
    runs as its variants and reports the better one (`systems.best_of_slots`)."""
    run_pass = run_interleaved if interleave else run_all
    keys = expand_systems(keys)
    rounds: dict[tuple[str, str], list[RunResult]] = {}
    for number in range(repeat):
        if repeat > 1:
            log(f"round {number + 1} of {repeat}")
        order = keys if number % 2 == 0 else keys[::-1]
        for result in run_pass(order, names, size, log_dir):
            rounds.setdefault((result.workload, result.system), []).append(result)
    return best_of_slots([median_round(runs) for runs in rounds.values()])


def run_all(keys: list[str], names: list[str], size: str, log_dir: Path) -> list[RunResult]:
    """System by system: start one (warmed up), run every workload on it, stop it.

    One system at a time, because in-process systems interfere: GNU OpenMP keeps a worker pool
    per thread that runs parallel kernels, and while two pools live on this 2-core machine idle
    workers stop spinning, which slows every kernel of both ~2x. A stopped engine's scheduler
    thread exits and takes its pool with it. Results come back workload by workload.
    """
    results = []
    for key in keys:
        try:
            with open_system(key, log_dir) as system:
                warm_up(system)
                for name in names:
                    results.append(_run_guarded(name, key, system, size))
        except Exception as exc:  # its rows say why; the other systems still run
            log(f"{key} failed: {exc!r}")
            done = {r.workload for r in results if r.system == key}
            results += [_failed(n, key, exc) for n in names if n not in done]
    return _workload_major(results, keys, names)


def run_interleaved(keys: list[str], names: list[str], size: str, log_dir: Path) -> list[RunResult]:
    """Workload by workload: start each system (warmed up), run the one workload, stop it.

    Costs a start-up per (workload, system), ~5-30 s, and buys comparable ratios: the speed of
    this guest drifts by up to 2x over minutes, and here a workload's systems run back to back.
    """
    results = []
    for name in names:
        for key in keys:
            unavailable = unavailable_result(WORKLOADS[name], SPECS[key])
            if unavailable is not None:  # no system start for a workload it cannot run
                results.append(unavailable)
                continue
            try:
                with open_system(key, log_dir) as system:
                    warm_up(system)
                    results.append(_run_guarded(name, key, system, size))
            except Exception as exc:  # its row says why; the other systems still run
                log(f"{key} failed on {name}: {exc!r}")
                results.append(_failed(name, key, exc))
    return _workload_major(results, keys, names)


def _workload_major(results: list[RunResult], keys: list[str], names: list[str]) -> list[RunResult]:
    order = {(n, k): i for i, (n, k) in enumerate((n, k) for n in names for k in keys)}
    return sorted(results, key=lambda r: order[(r.workload, r.system)])


def _run_guarded(name: str, key: str, system: OpenSystem, size: str) -> RunResult:
    try:
        return run_workload(WORKLOADS[name], system, size)
    except Exception as exc:  # report it in the table, go on with the next one
        log(f"{name} on {key} failed: {exc!r}")
        return _failed(name, key, exc)


def _failed(name: str, key: str, exc: Exception) -> RunResult:
    """The row of a run that raised: no numbers, the exception as its status."""
    return RunResult(name, key, status=f"failed: {exc!r}"[:300])


def main_pressure(args: argparse.Namespace, argv: list[str] | None) -> int:
    """`--pressure`: the scheduling policies side by side on a small KV pool (pressure.py)."""
    out = args.out or RESULTS_DIR / f"pressure-{args.size}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = record.command_line("python -m benchmarks.workloads", argv)
    info = machine_info()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="radixgen-workloads-") as log_dir:
        run = pressure.run_pressure(
            args.workloads, args.size, Path(log_dir), args.repeat, args.pressure, args.policies
        )
    info["total_s"] = round(time.perf_counter() - started, 1)
    workloads = [WORKLOADS[n] for n in args.workloads]
    report = pressure.markdown(run, workloads, args.size, info, command, args.repeat)
    data = {
        "command": command,
        "size": args.size,
        "repeat": args.repeat,
        "machine": info,
        "model": "SmolLM2-135M-Instruct Q4_1 GGUF",
        "workloads": {
            w.name: {"title": w.title, "shape": w.describe(args.size)} for w in workloads
        },
        "pressure": pressure.payload(run),
    }
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(report)
    settings = {"Results": f"{out.name} in {out.parent}"}
    record.save(
        args,
        "workloads-pressure",
        "Workload suite under memory pressure",
        report,
        command,
        settings,
    )
    log(f"done in {info['total_s']:.0f}s: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pressure is not None:
        return main_pressure(args, argv)
    out = args.out or RESULTS_DIR / f"{args.size}.json"
    chart_path = args.chart or out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = record.command_line("python -m benchmarks.workloads", argv)
    info = machine_info()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="radixgen-workloads-") as log_dir:
        results = run_rounds(
            args.systems, args.workloads, args.size, Path(log_dir), args.repeat, args.interleave
        )
    info["total_s"] = round(time.perf_counter() - started, 1)
    workloads = [WORKLOADS[n] for n in args.workloads]
    report = markdown(results, workloads, args.size, info, command, args.repeat, args.interleave)
    payload = {
        "command": command,
        "size": args.size,
        "repeat": args.repeat,
        "interleave": args.interleave,
        "machine": info,
        "model": "SmolLM2-135M-Instruct Q4_1 GGUF",
        "workloads": {
            w.name: {"title": w.title, "shape": w.describe(args.size)} for w in workloads
        },
        "systems": {k: SPECS[k].label for k in args.systems},
        "results": [{**dataclasses.asdict(r), "hit_vs_optimal": r.hit_vs_optimal} for r in results],
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    try:
        chart(results, workloads, chart_path)
    except ImportError:
        log('no chart: matplotlib is missing (pip install -e ".[bench]")')
    print(report)
    settings = {"Results": f"{out.name} and {chart_path.name} in {out.parent}"}
    record.save(args, "workloads", "Workload suite", report, command, settings)
    log(f"done in {info['total_s']:.0f}s: {out}, {chart_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
