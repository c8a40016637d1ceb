"""An attention plan: which query tokens attend to which KV slots, and how the parts merge.

The planner (`planner.py`) builds one `AttentionPlan` per forward pass; every layer's executor
runs the same plan. A plan is a list of *passes*, each a `ProblemSet`:

    own          every token of the batch in exactly one problem: its request's new tokens over
                 the request's own KV (after the shared segments), token n seeing the first
                 limits[n] slots of its problem's row, which makes extends causal;
    shared[d]    the prefixes groups of requests share at nesting depth d (`prefix_tree.py`):
                 one problem per group, all its tokens over the group's common slots. Tokens of
                 one level are disjoint; a token may be in no problem of a level.

Each pass yields (out, log-sum-exp) per token; the shared passes merge into the own result by
log-sum-exp, in order. Every executor computes exactly this; `ReferenceExecutor` does it in
plain PyTorch, so it runs any plan on any device and is what the others are tested against.

A sliding-window layer sees only the last `window` positions of its request (itself included):
its plan (`AttentionPlanner.plan(batch, window)`) has no shared levels, starts each request's
own part at the first position any of its new tokens can see, and bounds each token from below
by `ProblemSet.starts` where the window cuts inside a request's new tokens. A model with both
kinds of layers gets both plans at once (`LayerPlans`). With a hybrid KV pool the
sliding-window plan addresses SWA slots: `map_slots` rewrites its slots once per pass.

A batch may instead be planned in parts (`SplitPlan`): disjoint sets of its tokens, each with its
own plan. A mixed step's decode rows (one new token each) then read their KV in place while the
prefill chunk beside them gathers, where one plan for the whole batch would give every decode
row the chunk's method (a flash problem per row).

`method` and `layout` say how the planner meant the pass to run on its executor (the executor
cannot choose better: the planner sees the whole batch and the tuning). They never change what
is computed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

import torch

from radixgen.runtime.kernels.segment_attention import SegmentProblems


class PlanTarget(enum.Enum):
    """The executor family a plan is built for: which methods its passes may use."""

    GATHER = "gather"  # torch's flash attention over gathered K/V only
    IN_PLACE = "in_place"  # plus the native kernel reading the pool in place
    SEGMENT = "segment"  # the AMX segment kernel, every pass in place


class Method(enum.Enum):
    """How a pass runs."""

    IN_PLACE = "in_place"  # the native kernel reads each problem's slots where they lie
    PADDED = "padded"  # own parts gathered into one padded, masked flash problem
    PER_PROBLEM = "per_problem"  # own parts, one flash problem per request (causal + cached)
    GATHERED = "gathered"  # shared segments, each gathered once for all its tokens
    SEGMENT = "segment"  # the AMX segment kernel, flattened problems


@dataclass(frozen=True)
class PaddedLayout:
    """Own parts as one problem: queries padded to [B, E], keys to [B, Lo]."""

    slots: torch.Tensor  # [B * Lo] KV slots of each request's own part, 0 past its length
    mask: torch.Tensor  # [B, 1, E, Lo] additive (0 or -inf), in the pool's dtype
    q_dest: torch.Tensor | None  # [T] row of each flat token in the [B * E] layout (None: same)
    batch_size: int  # B
    max_extend: int  # E


@dataclass(frozen=True)
class PerProblemLayout:
    """Own parts one request at a time: its new tokens causal, its cached own KV all visible."""

    extend_lens: tuple[int, ...]  # E_b, in flat token order
    cached_slots: tuple[torch.Tensor | None, ...]  # [C_b] own slots before the new tokens


@dataclass(frozen=True)
class GatheredLayout:
    """Shared segments one at a time: each one's tokens and slots, ready to gather."""

    tokens: tuple[torch.Tensor | None, ...]  # [Tg] flat tokens of each segment (None: all)
    slots: tuple[torch.Tensor, ...]  # [P_s] each segment's slots


@dataclass(frozen=True)
class ProblemSet:
    """One pass: problem p's tokens attend to a prefix of slots[p] (see the module doc)."""

    method: Method
    tokens: torch.Tensor | None  # [N] flat token rows, problem after problem (None: all T)
    token_problem: torch.Tensor | None  # [N] problem of each token (None: token n is problem n)
    limits: torch.Tensor  # [N] slots each token sees: slots[problem, :limit]
    slots: torch.Tensor  # [P, L] each problem's KV slots in order; past its longest limit, any
    layout: PaddedLayout | PerProblemLayout | GatheredLayout | SegmentProblems | None = None
    # [N] first slot each token sees (None: 0). Only sliding-window plans set it, and only on
    # methods that honour it (PADDED, by its mask; the reference reads it directly).
    starts: torch.Tensor | None = None

    @property
    def num_problems(self) -> int:
        return int(self.slots.shape[0])


@dataclass(frozen=True)
class AttentionPlan:
    """Everything a layer's attention needs, computed once per forward pass."""

    out_cache_loc: torch.Tensor  # [T] slots receiving the new K/V
    own: ProblemSet  # covers every token once
    shared: tuple[ProblemSet, ...]  # by nesting depth; merged into `own` in order


@dataclass(frozen=True)
class SplitPlan:
    """A batch planned in parts: each part's flat tokens attend as that part's plan says. The
    parts' tokens are disjoint and together every token; the batch's new K/V are all stored
    before any part attends (a part may read what another part's tokens write)."""

    out_cache_loc: torch.Tensor  # [T] slots receiving the new K/V, as in AttentionPlan
    parts: tuple[tuple[torch.Tensor, AttentionPlan], ...]  # ([Tp] flat tokens, their plan)


@dataclass(frozen=True)
class LayerPlans:
    """The plans of one forward pass of a model with sliding-window layers: `full` for its
    global layers, `local` for the layers whose window is `window`."""

    full: AttentionPlan | SplitPlan
    local: AttentionPlan | SplitPlan
    window: int


def map_slots(plan: AttentionPlan | SplitPlan, slot_map: torch.Tensor) -> AttentionPlan | SplitPlan:
    """`plan` with every KV slot it names replaced by `slot_map[slot]` ([S] int64): a
    sliding-window plan of a hybrid pool then addresses its layers' SWA slots (`kv_pool.py`).
    The mapping is one gather per slot tensor, once per forward pass, not once per layer."""
    if isinstance(plan, SplitPlan):
        parts = tuple((tokens, map_slots(part, slot_map)) for tokens, part in plan.parts)
        return SplitPlan(slot_map[plan.out_cache_loc], parts)
    if plan.shared:
        raise ValueError("a plan with shared levels is not a sliding-window plan")
    return AttentionPlan(slot_map[plan.out_cache_loc], _map_problems(plan.own, slot_map), ())


def _map_problems(problems: ProblemSet, slot_map: torch.Tensor) -> ProblemSet:
    layout = problems.layout
    if isinstance(layout, PaddedLayout):
        layout = replace(layout, slots=slot_map[layout.slots])
    elif isinstance(layout, PerProblemLayout):
        cached = tuple(None if s is None else slot_map[s] for s in layout.cached_slots)
        layout = replace(layout, cached_slots=cached)
    elif layout is not None:
        raise ValueError(f"cannot map the slots of a {type(layout).__name__}")
    return replace(problems, slots=slot_map[problems.slots], layout=layout)
