"""The serving benchmark's results: one streamed request, one system at one concurrency level
(`summarize`), and the printed report with its ratios and the targets of issue 27
(benchmarks/bench_serving.py runs the workload; its docstring defines every metric)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from benchmarks import record
from benchmarks.servers import ServerSpec
from benchmarks.stats import percentile

FLAT_RSS_GROWTH = 0.10  # "memory flat": RSS after a pass of the workload within 10% of before it
TARGET_LEVEL, TARGET_REQ_RATIO = 8, 3.5
STREAMS_LEVEL, STREAMS_ITL_P99_MS = 64, 200.0


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
    rss_again_mb: tuple[float | None, float | None] | None = None
    """Before and after a second pass of the same workload (the memory check), if one ran."""
    load_avg_1m: float | None = None  # right after the workload: other work on the machine

    @property
    def rss_growth(self) -> float | None:
        """RSS growth over the reported pass."""
        before, _, after = self.rss_mb
        return _growth(before, after)

    @property
    def rss_again_growth(self) -> float | None:
        """RSS growth over the second pass, None where none ran."""
        return None if self.rss_again_mb is None else _growth(*self.rss_again_mb)

    @property
    def memory_flat(self) -> bool | None:
        """The second pass's growth within FLAT_RSS_GROWTH (the first's where none ran)."""
        growth = self.rss_growth if self.rss_again_mb is None else self.rss_again_growth
        return None if growth is None else growth <= FLAT_RSS_GROWTH


def _growth(before: float | None, after: float | None) -> float | None:
    return (after - before) / before if before and after is not None else None


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


def counter_hit_rate(before: dict[str, Any], after: dict[str, Any]) -> float | None:
    prompt = after.get("prompt_tokens", 0) - before.get("prompt_tokens", 0)
    cached = after.get("cached_tokens", 0) - before.get("cached_tokens", 0)
    return cached / prompt if prompt else None


def megabytes(n: int | None) -> float | None:
    return None if n is None else n / 2**20


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
            pct = lambda g: _fmt(None if g is None else 100 * g, "+.1f")
            memory = f"RSS {pct(rg.rss_growth)}% over the run"
            if rg.rss_again_mb is not None:
                memory += f", {pct(rg.rss_again_growth)}% over a second pass"
            holds = rg.itl_ms[1] <= STREAMS_ITL_P99_MS and rg.errors == 0 and rg.memory_flat
            out.append(
                f"- {name}: p99 ITL {rg.itl_ms[1]:.0f} ms, {rg.errors} errors, {memory}: "
                f"{'holds' if holds else 'MISSED'}"
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
