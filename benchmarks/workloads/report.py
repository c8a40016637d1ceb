"""Turn run results into a README-ready Markdown report, the targets check, and a chart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.workloads.base import Workload
from benchmarks.workloads.metrics import RunResult, ceiling, paired_ratio, round_ratios
from benchmarks.workloads.systems import SPECS
from radixgen.runtime.config import EngineConfig

CEILING_SHARE = 0.9  # issue 27: radixgen reaches >= 90% of its ceiling over cache off
DASH = "—"


def _int4_tokens(dtype: str) -> int:
    """The widest decode step on the 4-bit weights, for the run's compute dtype."""
    return EngineConfig(dtype=dtype).int4_tokens()


def _head_note(dtype: str) -> str:
    """How the run's output head multiplied: float32 engines use its Q8_0 blocks for narrow
    passes (since dcf26f7)."""
    head = EngineConfig().tuning.int8_head_max_tokens
    return "" if dtype != "float32" else f" and of <= {head} on the Q8_0 head"


def _fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return DASH if x is None else format(x, spec) + suffix


def _pct(x: float | None) -> str:
    return _fmt(None if x is None else 100 * x, ".1f", "%")


def _cell(r: RunResult | None) -> str:
    if r is None:
        return DASH
    if not r.ok:
        return "n/a" if r.status.startswith("n/a") else "failed"
    return _fmt(r.programs_per_s, ".2f")


def _rounds(r: RunResult) -> str:
    return ", ".join("failed" if x is None else f"{x:.2f}" for x in r.round_programs_per_s)


def _index(results: Sequence[RunResult]) -> dict[tuple[str, str], RunResult]:
    return {(r.workload, r.system): r for r in results}


def ceiling_vs_cache_off(
    rg: RunResult | None, nc: RunResult | None
) -> tuple[float | None, float | None]:
    """radixgen's ceiling over cache off (`metrics.ceiling`, from the two runs' engine
    counters) and the share of it reached: the measured (paired) speedup / the ceiling."""
    if rg is None or nc is None or not rg.ok or not nc.ok:
        return None, None
    limit = ceiling(nc.counters, rg.counters)
    speedup = paired_ratio(rg, nc)
    share = speedup / limit if limit and speedup is not None else None
    return limit, share


def summary_table(results: Sequence[RunResult], workloads: Sequence[Workload]) -> list[str]:
    """Programs/s per workload and system, the two speedups, radixgen's ceiling over cache
    off and the share of it reached, radixgen's hit rate vs optimal."""
    by = _index(results)
    systems = [k for k in SPECS if any(r.system == k for r in results)]
    head = ["workload", *(f"{SPECS[k].label} (prog/s)" for k in systems)]
    head += ["vs cache off", "ceiling", "of ceiling", "vs llama.cpp", "hit rate / optimal"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for w in workloads:
        rg = by.get((w.name, "radixgen"))
        nc = by.get((w.name, "no-cache"))
        cells = [w.title, *(_cell(by.get((w.name, k))) for k in systems)]
        cells.append(_fmt(paired_ratio(rg, nc), ".1f", "x"))
        limit, share = ceiling_vs_cache_off(rg, nc)
        cells += [_fmt(limit, ".1f", "x"), _pct(share)]
        cells.append(_fmt(paired_ratio(rg, by.get((w.name, "llamacpp"))), ".1f", "x"))
        if rg is not None and rg.ok and rg.hit_rate is not None:
            cells.append(f"{_pct(rg.hit_rate)} / {_pct(rg.optimal_hit_rate)}")
        else:
            cells.append(DASH)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _engine_time(r: RunResult) -> str:
    """Prefill tokens and seconds, decode seconds: the ceiling's inputs (engines only)."""
    c = r.counters
    if c.get("prefill_seconds") is None or c.get("decode_seconds") is None:
        return DASH
    return (
        f"{c.get('prefill_tokens', 0):,.0f} ({c['prefill_seconds']:.1f}) / "
        f"{c['decode_seconds']:.1f}"
    )


def detail_table(results: Sequence[RunResult], workloads: Sequence[Workload]) -> list[str]:
    """Every metric of every run that produced numbers."""
    repeated = any(len(r.round_programs_per_s) > 1 for r in results)
    head = "| workload | system | programs/s | "
    head += "rounds (prog/s) | " if repeated else ""
    head += "gen tok/s | latency p50 / p99 (s) | hit rate | optimal | "
    head += "prefill tok (s) / decode s | failed |"
    lines = [
        head,
        "|---|---|---:|" + ("---:|" if repeated else "") + "---:|---:|---:|---:|---:|---:|",
    ]
    order = {w.name: i for i, w in enumerate(workloads)}
    keys = list(SPECS)
    for r in sorted(results, key=lambda r: (order.get(r.workload, 99), keys.index(r.system))):
        if not r.ok:
            continue
        title = next((w.title for w in workloads if w.name == r.workload), r.workload)
        cells = [
            title,
            SPECS[r.system].label + (f": {r.note}" if r.note else ""),
            _fmt(r.programs_per_s, ".2f"),
            *([_rounds(r)] if repeated else []),
            _fmt(r.generated_tok_per_s, ".1f"),
            f"{_fmt(r.latency_p50_s, '.2f')} / {_fmt(r.latency_p99_s, '.2f')}",
            _pct(r.hit_rate),
            _pct(r.optimal_hit_rate),
            _engine_time(r),
            f"{r.failed_programs}/{r.programs}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def targets(results: Sequence[RunResult], workloads: Sequence[Workload]) -> list[str]:
    """The issue's targets, each with the measured figure and whether it holds."""
    by = _index(results)
    out = []

    def verdict(name: str, value: float | None, goal: float, unit: str, rounds: str = "") -> str:
        if value is None:
            return f"- {name}: not measured"
        ok = "holds" if value >= goal else f"MISSED by {goal - value:.2f}{unit}"
        return f"- {name}: {value:.2f}{unit}{rounds} (target >= {goal:g}{unit}): {ok}"

    def speedup(name: str, a: RunResult | None, b: RunResult | None, goal: float) -> str:
        per_round = round_ratios(a, b) if a is not None and b is not None else []
        rounds = ""
        if len(per_round) > 1:
            rounds = f" (rounds: {', '.join(f'{x:.2f}' for x in per_round)})"
        return verdict(name, paired_ratio(a, b), goal, "x", rounds)

    for w in workloads:
        rg = by.get((w.name, "radixgen"))
        nc = by.get((w.name, "no-cache"))
        limit, share = ceiling_vs_cache_off(rg, nc)
        if limit is not None and share is not None:
            ok = "holds" if share >= CEILING_SHARE else "MISSED"
            out.append(
                f"- {w.title} vs cache off: {paired_ratio(rg, nc):.2f}x of a {limit:.2f}x "
                f"ceiling = {_pct(share)} (target >= {_pct(CEILING_SHARE)}): {ok}"
            )
        if w.multi_call:
            lc = by.get((w.name, "llamacpp"))
            if lc is not None and lc.ok:
                out.append(speedup(f"{w.title} vs llama.cpp", rg, lc, 3))
        if rg is not None and rg.ok and rg.hit_vs_optimal is not None:
            out.append(verdict(f"{w.title} hit rate / optimal", rg.hit_vs_optimal, 0.95, ""))
    return out


def markdown(
    results: Sequence[RunResult],
    workloads: Sequence[Workload],
    size: str,
    info: dict[str, Any],
    command: str,
    repeat: int = 1,
    interleave: bool = False,
) -> str:
    """The whole report: setup, summary, workload shapes, details, targets."""
    rounds = ""
    if interleave:
        rounds += " Workload by workload, each system was started, ran it, and was stopped."
    if repeat > 1:
        rounds += (
            f" The pass ran {repeat} times, the system order reversed every other round. "
            "Throughputs are each system's median round (the details list every round); "
            "speedups are the median of the per-round ratios."
        )
    dtype = info.get("dtype", "bfloat16")  # runs from before the field computed in bfloat16
    flags = f" ({info['cpu_flags']})" if info.get("cpu_flags") else ""
    lines = [
        f"`{command}` ({info['date']}, size `{size}`). Hardware: {info['cpu']}{flags}, "
        f"{info['cores']} cores, torch {info['torch']} CPU. Model: SmolLM2-135M-Instruct "
        f"Q4_1 GGUF (radixgen and transformers compute in {dtype}, "
        f"radixgen's decode steps of <= {_int4_tokens(dtype)} requests on the 4-bit "
        f"blocks{_head_note(dtype)}, llama.cpp on the Q4_1 "
        f"weights, {info.get('llama_cpp', 'llama-cpp-python')}, 2 threads). "
        f"All programs greedy (temperature 0).{rounds}",
        "",
        *summary_table(results, workloads),
        "",
        "Ceiling: radixgen's speedup over cache off if computing fewer prefill tokens were its "
        "only advantage, from the engines' counters: cache off's prefill + decode seconds / "
        "(radixgen's prefill tokens x cache off's seconds per prefill token + radixgen's decode "
        "seconds). Of ceiling: the measured speedup / the ceiling.",
        "",
        "Workloads (seeded stand-ins for the paper's data, except ShareGPT):",
        "",
        "| workload | shape |",
        "|---|---|",
        *(f"| {w.title} | {w.describe(size)} |" for w in workloads),
        "",
        *detail_table(results, workloads),
        "",
        "Targets:",
        "",
        *targets(results, workloads),
    ]
    failed = [r for r in results if not r.ok and not r.status.startswith("n/a")]
    if failed:
        lines += ["", "Failed runs:", ""]
        lines += [f"- {r.workload} on {r.system}: {r.status}" for r in failed]
    return "\n".join(lines) + "\n"


def chart(results: Sequence[RunResult], workloads: Sequence[Workload], path: Path) -> None:
    """Grouped bars: each workload's programs/s divided by its best system's (the paper's
    normalized-throughput figure); systems that did not run it are marked n/a."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = _index(results)
    systems = [k for k in SPECS if any(r.system == k for r in results)]
    width = 0.8 / max(1, len(systems))
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(workloads)), 4.2))
    for j, key in enumerate(systems):
        for i, w in enumerate(workloads):
            r = by.get((w.name, key))
            best = max(
                (x.programs_per_s or 0 for k in systems if (x := by.get((w.name, k))) and x.ok),
                default=0,
            )
            x = i + (j - (len(systems) - 1) / 2) * width
            if r is not None and r.ok and best:
                label = SPECS[key].label if i == 0 else None
                ax.bar(x, r.programs_per_s / best, width, color=f"C{j}", label=label)
            else:
                ax.text(x, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=6)
    ax.set_xticks(range(len(workloads)), [w.title for w in workloads], rotation=25, ha="right")
    ax.set_ylabel("throughput (normalized to best)")
    ax.set_ylim(0, 1.08)
    ax.set_xlim(-0.6, len(workloads) - 0.4)
    ax.legend(
        fontsize=8, ncols=min(5, len(systems)), loc="upper center", bbox_to_anchor=(0.5, 1.16)
    )
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
