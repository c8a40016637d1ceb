"""Per-run metrics: throughput, latency percentiles, cache hit rates and the optimal hit rate.

Optimal hit rate (the paper's "optimal", an infinite cache): replay every request the workload
sent, in order, through a trie of token ids; a request's reusable tokens are the longest prefix
of its prompt already in the trie, i.e. shared with something computed before. After matching,
the request inserts its prompt and its output minus the last token (the KV a runtime computed
for it: a later turn re-sends earlier answers). Two variants:

* `optimal_unbounded` = reused / total prompt tokens (1 - new prompt nodes / total, when
  outputs are left out);
* `optimal` (the one compared against) additionally leaves to compute what no cache can
  supply: the last prompt token (its logits are needed) and every position whose prompt
  logprob was requested (`select` scoring). radixgen's `cached_tokens` obeys the same bounds.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from benchmarks.stats import percentile
from benchmarks.workloads.recording import TokenizedRequest

__all__ = [
    "RunResult",
    "ceiling",
    "median_round",
    "optimal_hit_rate",
    "paired_ratio",
    "percentile",
    "round_ratios",
]


@dataclass(frozen=True)
class OptimalHitRate:
    prompt_tokens: int
    unique_tokens: int  # prompt tokens not found in the trie
    reusable_tokens: int  # reuse within the bounds above

    @property
    def unbounded(self) -> float:
        return 1 - self.unique_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def bounded(self) -> float:
        return self.reusable_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def optimal_hit_rate(requests: Iterable[TokenizedRequest]) -> OptimalHitRate:
    """Replay the requests, in order, through a prefix trie of token ids (nested dicts)."""
    root: dict[int, dict] = {}
    total = unique = reusable = 0
    for request in requests:
        ids, logprob_start = request.prompt, request.logprob_start
        node, matched = root, 0
        while matched < len(ids) and ids[matched] in node:
            node = node[ids[matched]]
            matched += 1
        for token in [*ids[matched:], *request.output[:-1]]:
            node = node.setdefault(token, {})
        limit = len(ids) - 1
        if logprob_start is not None:
            limit = min(limit, logprob_start)
        total += len(ids)
        unique += len(ids) - matched
        reusable += max(0, min(matched, limit))
    return OptimalHitRate(total, unique, reusable)


@dataclass
class RunResult:
    """One workload on one system. `status` is "ok", or why there are no numbers."""

    workload: str
    system: str
    status: str = "ok"
    programs: int = 0
    failed_programs: int = 0
    first_failure: str = ""
    requests: int = 0
    wall_s: float = 0.0
    programs_per_s: float | None = None
    prompt_tokens: int = 0
    generated_tokens: int = 0
    generated_tok_per_s: float | None = None
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    hit_rate: float | None = None
    """cached / prompt tokens from the runtime's counters (None: the system does not say)."""
    optimal_hit_rate: float | None = None
    optimal_unbounded: float | None = None
    counters: dict[str, float] = field(default_factory=dict)
    round_programs_per_s: list[float | None] = field(default_factory=list)
    """programs/s of every round, in round order (None: that round failed); set by
    `median_round` (one entry after a single round), empty on a result taken alone."""
    note: str = ""
    """Shown next to the system's name (llama.cpp: which slot count this row is)."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def hit_vs_optimal(self) -> float | None:
        if self.hit_rate is None or not self.optimal_hit_rate:
            return None
        return self.hit_rate / self.optimal_hit_rate


def _throughput(r: RunResult) -> float | None:
    return r.programs_per_s if r.ok else None


def median_round(rounds: Sequence[RunResult]) -> RunResult:
    """One workload on one system run several times: its median successful round by
    throughput (the lower one of an even count), carrying every round's programs/s in round
    order; the last round when none worked.

    A real round rather than averaged figures, so its latencies and hit rate belong together.
    """
    if not rounds:
        raise ValueError("median_round needs at least one round")
    per_round = [_throughput(r) for r in rounds]
    ok = sorted((r for r in rounds if _throughput(r) is not None), key=_throughput)
    chosen = ok[(len(ok) - 1) // 2] if ok else rounds[-1]
    return replace(chosen, round_programs_per_s=per_round)


def round_ratios(a: RunResult, b: RunResult) -> list[float]:
    """a's programs/s over b's, round by round, for the rounds both finished."""
    pairs = zip(a.round_programs_per_s, b.round_programs_per_s, strict=False)
    return [x / y for x, y in pairs if x is not None and y]


def paired_ratio(a: RunResult | None, b: RunResult | None) -> float | None:
    """How many times faster a ran than b: the median of the per-round ratios when both ran
    several rounds, else the plain ratio (None when either has no numbers).

    Per-round pairs compare the two systems in the same machine state (with `--interleave`
    they ran back to back); this guest's speed drifts by up to 2x over minutes, which a ratio
    of separately picked rounds would carry straight into the speedup.
    """
    if a is None or b is None or _throughput(a) is None or not _throughput(b):
        return None
    ratios = round_ratios(a, b)
    if ratios:
        return statistics.median(ratios)
    return a.programs_per_s / b.programs_per_s


def ceiling(cache_off: Mapping[str, float], radixgen: Mapping[str, float]) -> float | None:
    """radixgen's best speedup over cache-off if its only advantage were computing fewer
    prefill tokens (None without the counters, or with nothing prefilled or timed).

        cache-off's time / (radixgen's prefill tokens x cache-off's seconds per prefill token
                            + radixgen's decode seconds)

    Both sides are the engines' own busy time (`prefill_seconds + decode_seconds` of the
    scheduler's counters over the run), as the judge trace of history.md computed its 5.3x:
    the frontend's and the scheduler's time outside forward passes is left out of both, so
    the measured wall-clock speedup over this ceiling (`fraction of ceiling`) also charges
    radixgen for any overhead the cache does not remove. Decode is radixgen's own: the cache
    cannot shorten it, and radixgen's decode steps attend over shared prefixes cache-off
    recomputes, so they need not cost what cache-off's do. Prefill tokens count every token a
    prefill pass computed, re-prefills after a retraction included.
    """
    needed = ("prefill_tokens", "prefill_seconds", "decode_seconds")
    if any(cache_off.get(k) is None or radixgen.get(k) is None for k in needed):
        return None
    off, rg = busy_split(cache_off), busy_split(radixgen)
    if not off["prefill_tokens"]:
        return None
    per_token = off["prefill_seconds"] / off["prefill_tokens"]
    modelled = rg["prefill_tokens"] * per_token + rg["decode_seconds"]
    if modelled <= 0:
        return None
    return (off["prefill_seconds"] + off["decode_seconds"]) / modelled


def busy_split(counters: Mapping[str, float]) -> dict[str, float]:
    """Prefill tokens, prefill seconds and decode seconds with mixed steps folded in.

    A mixed step (a prefill chunk and every running request's decode token in one pass) is
    counted apart by the scheduler (`mixed_*`); its seconds are shared between prefill and
    decode in proportion to their tokens, an approximation (a decode row over a long KV costs
    more than a prefill token), and its prefill tokens join the prefill count."""
    prefill_tokens = counters["prefill_tokens"] + counters.get("mixed_prefill_tokens", 0)
    prefill_seconds, decode_seconds = counters["prefill_seconds"], counters["decode_seconds"]
    mixed_tokens = counters.get("mixed_prefill_tokens", 0) + counters.get("mixed_decode_tokens", 0)
    if mixed_tokens:
        prefill_share = counters.get("mixed_prefill_tokens", 0) / mixed_tokens
        prefill_seconds += counters.get("mixed_seconds", 0.0) * prefill_share
        decode_seconds += counters.get("mixed_seconds", 0.0) * (1 - prefill_share)
    return {
        "prefill_tokens": prefill_tokens,
        "prefill_seconds": prefill_seconds,
        "decode_seconds": decode_seconds,
    }
