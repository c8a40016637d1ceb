"""A scheduler's admissions, watched from outside: what each request found cached when it
first waited, what it reused when admitted, how long it waited, what evictions freed.

`SchedulerTrace.install(engine)` wraps three of the engine's scheduler attributes (its
`step`, its prefill manager's `build` and its radix tree's `evict`) with recording shims;
scheduling itself is unchanged, and the cache is read without being touched (no edge split,
no LRU refresh). Pressure mode (pressure.py) reports its totals per run; pressure_trace.py
prints them and every prefill batch.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


def cached_prefix_len(tree: Any, ids: list[int]) -> int:
    """How many leading tokens of `ids` the radix tree holds, read-only (unlike
    `RadixCache.match_prefix`, which splits edges and refreshes access times)."""
    node, pos = tree.root, 0
    while pos < len(ids) and ids[pos] in node.children:
        child = node.children[ids[pos]]
        edge = child.key
        matched = 0
        while (
            matched < len(edge) and pos + matched < len(ids) and edge[matched] == ids[pos + matched]
        ):
            matched += 1
        pos += matched
        if matched < len(edge):
            break
        node = child
    return pos


@dataclass
class Admission:
    prompt_tokens: int
    arrival_step: int
    cached_at_arrival: int
    admit_step: int | None = None
    cached: int | None = None
    rank: int | None = None  # place in the policy's order when admitted


@dataclass
class Batch:
    step: int
    waiting: int
    admitted: list[str]  # rids
    evicted_before: int  # tokens evicted since the previous batch


@dataclass
class SchedulerTrace:
    """Wraps one engine's scheduler (prefill admission, steps, evictions) to record them."""

    requests: dict[str, Admission] = field(default_factory=dict)
    batches: list[Batch] = field(default_factory=list)
    evicted: int = 0
    step: int = 0
    _evicted_since_batch: int = 0

    def install(self, engine: Any) -> None:
        """Call while the engine is idle; the wrappers stay for the engine's life."""
        scheduler = engine.scheduler
        tree = scheduler.cache.tree
        step, build, evict = scheduler.step, scheduler.prefill.build, tree.evict

        def traced_step() -> None:
            self.step += 1
            step()

        def traced_build(ordered: list, *args: Any, **kwargs: Any) -> Any:
            for req in ordered:
                if req.rid not in self.requests and not req.retractions:
                    limit = max(req.seq_len - 1, 0)
                    cached = cached_prefix_len(tree, req.fill_ids[:limit])
                    self.requests[req.rid] = Admission(len(req.origin_input_ids), self.step, cached)
            batch = build(ordered, *args, **kwargs)
            if batch is None:
                return None
            admitted = []
            for req in batch.reqs:
                entry = self.requests.get(req.rid)
                if entry is None or entry.admit_step is not None or req.retractions:
                    continue  # a chunk's continuation, or a re-admission after retraction
                entry.admit_step, entry.cached = self.step, req.cached_tokens
                entry.rank = next(i for i, r in enumerate(ordered) if r is req)
                admitted.append(req.rid)
            self.batches.append(Batch(self.step, len(ordered), admitted, self._evicted_since_batch))
            self._evicted_since_batch = 0
            return batch

        def traced_evict(num_tokens: int) -> int:
            freed = evict(num_tokens)
            self.evicted += freed
            self._evicted_since_batch += freed
            return freed

        scheduler.step = traced_step
        scheduler.prefill.build = traced_build
        tree.evict = traced_evict

    def summary(self) -> dict[str, float]:
        done = [a for a in self.requests.values() if a.admit_step is not None]
        lost = sum(max(0, a.cached_at_arrival - a.cached) for a in done)
        gained = sum(max(0, a.cached - a.cached_at_arrival) for a in done)
        return {
            "requests": len(done),
            "prompt_tokens": sum(a.prompt_tokens for a in done),
            "cached_tokens": sum(a.cached for a in done),
            "lost_while_waiting": lost,
            "requests_that_lost": sum(1 for a in done if a.cached < a.cached_at_arrival),
            "gained_while_waiting": gained,
            "evicted_tokens": self.evicted,
            "prefill_batches": len(self.batches),
            "mean_wait_steps": statistics.fmean(a.admit_step - a.arrival_step for a in done)
            if done
            else 0.0,
        }

    def batch_log(self) -> list[str]:
        lines = []
        for b in self.batches:
            parts = []
            for rid in b.admitted:
                a = self.requests[rid]
                parts.append(
                    f"{a.prompt_tokens}tok #{a.rank} cached {a.cached}"
                    f" (had {a.cached_at_arrival}, waited {a.admit_step - a.arrival_step})"
                )
            lines.append(
                f"step {b.step}: {b.waiting} waiting, evicted {b.evicted_before} before; "
                + ("; ".join(parts) or "continues a chunk")
            )
        return lines
