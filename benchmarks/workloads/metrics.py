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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from benchmarks.stats import percentile
from benchmarks.workloads.recording import TokenizedRequest

__all__ = ["RunResult", "best_of_rounds", "optimal_hit_rate", "percentile"]


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
    round_programs_per_s: list[float] = field(default_factory=list)
    """programs/s of every successful round when the suite ran several (`--repeat`)."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def hit_vs_optimal(self) -> float | None:
        if self.hit_rate is None or not self.optimal_hit_rate:
            return None
        return self.hit_rate / self.optimal_hit_rate


def best_of_rounds(rounds: Sequence[RunResult]) -> RunResult:
    """One workload on one system run several times: the successful round with the highest
    throughput, carrying every successful round's programs/s; a failed round when none worked.

    Best rather than median: on a shared virtual machine, CPU steal from other guests only ever
    slows a run, so the fastest round is the closest to what the system can do, and taking it
    for every system keeps the comparison fair.
    """
    if not rounds:
        raise ValueError("best_of_rounds needs at least one round")
    ok = [r for r in rounds if r.ok and r.programs_per_s is not None]
    if not ok:
        return rounds[-1]
    best = max(ok, key=lambda r: r.programs_per_s)
    return replace(best, round_programs_per_s=[r.programs_per_s for r in ok])
