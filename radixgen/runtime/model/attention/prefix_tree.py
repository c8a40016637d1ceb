"""The prefix tree a batch's requests share, found from their rows of the req-to-token table.

Requests that reuse a radix-tree prefix point at the same KV slots, so comparing rows of the
req-to-token table finds the prefixes groups of the batch share: the system prompt every request
starts with, the article six forks of one program judge, the few-shot block of one subject.
Attention reads such a prefix once for the whole group (a *shared segment*) instead of once per
request, and merges the partial results by their log-sum-exp.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SharedSegment:
    """KV slots that a group of the batch's requests all hold at the same positions."""

    rows: torch.Tensor | None  # [Bg] batch rows of the group (None: every row)
    slots: torch.Tensor  # [P] the common KV slots


def find_shared_segments(
    kv_indices: torch.Tensor,  # [B, L] KV slots of each request (padded past its length)
    prefix_lens: torch.Tensor,  # [B] cached tokens of each request
    min_len: int,
    min_saving: int,
) -> tuple[tuple[tuple[SharedSegment, ...], ...], torch.Tensor]:
    """The prefix tree the batch's requests share: (segments by depth, own_start [B]).

    Contract: each segment lies inside the cached prefix of every row of its group, and the
    segments along one request's path tile its KV contiguously from position 0 to
    `own_start[b]`; the own part covers the rest. A segment is at least `min_len` tokens long
    and re-reads at least `min_saving` tokens fewer than the own parts would, (rows - 1) x its
    length; other common prefixes stay in the own parts. Segments of one depth have disjoint
    rows, and at most one segment of each depth lies on a request's path.
    """
    B = kv_indices.shape[0]
    own_start = torch.zeros(B, dtype=torch.int64)
    levels: list[list[SharedSegment]] = []

    def split(rows: torch.Tensor, begin: int, depth: int) -> None:
        # Invariant: every row in `rows` holds the same slots at [0, begin), already covered.
        limit = int(prefix_lens[rows].min())
        block = kv_indices[rows, begin:limit]  # [Bg, limit - begin]
        same = (block == block[:1]).all(dim=0)
        common = int(torch.cumprod(same.to(torch.int32), dim=0).sum()) if limit > begin else 0
        diverge = begin + common
        if common >= min_len and (rows.shape[0] - 1) * common >= min_saving:
            segment = SharedSegment(
                None if rows.shape[0] == B else rows, kv_indices[rows[0], begin:diverge]
            )
            if len(levels) <= depth:
                levels.append([])
            levels[depth].append(segment)
            own_start[rows] = diverge
            begin, depth = diverge, depth + 1
        # Rows whose cached prefix goes on past the divergence, grouped by their next slot.
        # Each subgroup is strictly smaller than `rows`, so the recursion ends.
        longer = rows[prefix_lens[rows] >= diverge + min_len]
        if longer.shape[0] < 2:
            return
        next_slots = kv_indices[longer, diverge]
        values, counts = torch.unique(next_slots, return_counts=True)
        for value in values[counts >= 2].tolist():
            split(longer[next_slots == value], begin, depth)

    if B >= 2:
        split(torch.arange(B), 0, 0)
    return tuple(tuple(level) for level in levels), own_start
