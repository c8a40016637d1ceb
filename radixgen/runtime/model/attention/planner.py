"""AttentionPlanner: a batch -> one `AttentionPlan` (see `plan.py`), once per forward pass.

What the plan computes is fixed: each request's new tokens over its KV, causal. The planner
decides how to split and run it, by the batch's shape, the executor's target and `Tuning`:

- **Shared segments** (`prefix_tree.py`): a prefix a group of requests shares is read once for
  the group when that saves enough re-reading to pay for the extra pass and its merge. Reading
  in place makes re-reading cheap (the prefix stays in cache between requests, and the native
  kernel already reads a prefix once for the decode tokens whose rows share it), so in-place
  targets ask for much wider savings before they split a segment off.
- **Own parts on the gathering path**: one padded problem for the batch, unless padding every
  request to the longest extend and the longest KV would multiply the work by more than
  `ragged_waste_ratio`; then one problem per request. Compute-bound extends whose own parts would
  go per request run better as one padded problem over whole sequences, without segments.
- **In place**: decode steps and extends up to `max_in_place_extend[_bfloat16]` new tokens per
  request read their own parts where they lie in the pool (no gather, no padding); decode steps
  read their shared levels in place too, extends gather them.
- **The AMX target** runs everything in place as flattened problems (`SegmentProblems`).
- **Mixed batches** (a mixed step: decode rows of one new token next to a prefill chunk longer
  than the in-place limit) are planned in two parts (`SplitPlan`): the decode rows as a decode
  step, the rest as an extend. One plan for both would give every decode row the chunk's
  gathered method (a flash problem per row, ~2 per request per layer).
"""

from __future__ import annotations

import dataclasses

import torch

from radixgen.runtime.cache.req_table import ReqToTokenTable
from radixgen.runtime.kernels.segment_attention import SegmentProblems
from radixgen.runtime.model.attention.plan import (
    AttentionPlan,
    GatheredLayout,
    Method,
    PaddedLayout,
    PerProblemLayout,
    PlanTarget,
    ProblemSet,
    SplitPlan,
)
from radixgen.runtime.model.attention.prefix_tree import SharedSegment, find_shared_segments
from radixgen.runtime.model.batch import ForwardBatch, ForwardMode
from radixgen.runtime.tuning import Tuning

Levels = tuple[tuple[SharedSegment, ...], ...]


class AttentionPlanner:
    def __init__(
        self,
        req_table: ReqToTokenTable,
        tuning: Tuning,
        target: PlanTarget,
        kv_dtype: torch.dtype,
    ):
        """Plans for executors of `target` over a KV pool of `kv_dtype` (the in-place kernel's
        extend limit depends on it)."""
        self.req_table = req_table
        self.tuning = tuning
        self.target = target
        self.kv_dtype = kv_dtype
        self.max_in_place_extend = 0
        if target is PlanTarget.IN_PLACE:
            self.max_in_place_extend = (
                tuning.max_in_place_extend
                if kv_dtype == torch.float32
                else tuning.max_in_place_extend_bfloat16
            )

    def plan(self, batch: ForwardBatch, window: int | None = None) -> AttentionPlan | SplitPlan:
        """The batch's plan; with `window`, for sliding-window layers: each token sees only
        its request's last `window` positions up to itself."""
        if self.target is PlanTarget.SEGMENT:
            if window is not None:
                raise ValueError("the AMX segment target has no sliding-window plans")
            return self._segment_plan(batch)
        parts = self._mixed_parts(batch)
        if parts is not None:
            return SplitPlan(
                batch.out_cache_loc,
                tuple((tokens, self._plan(part, window)) for tokens, part in parts),
            )
        return self._plan(batch, window)

    def _mixed_parts(self, batch: ForwardBatch) -> list[tuple[torch.Tensor, ForwardBatch]] | None:
        """A mixed extend's decode rows and the rest, each as ([Tp] flat tokens, sub-batch);
        None when one plan serves the batch: no decode rows, only decode rows, or no extend
        both compute-bound and too long for the in-place kernel (short ones pad well)."""
        if batch.mode is ForwardMode.DECODE:
            return None
        extend_lens = batch.extend_lens
        decoding = extend_lens == 1  # [B]
        if bool(decoding.all()) or not bool(decoding.any()):
            return None
        longest = int(extend_lens.max())
        if longest <= self.max_in_place_extend or longest < self.tuning.min_compute_bound_extend:
            return None
        token_req = torch.repeat_interleave(torch.arange(batch.batch_size), extend_lens)
        token_decoding = decoding[token_req]  # [T]
        parts = []
        for rows, tokens in ((decoding, token_decoding), (~decoding, ~token_decoding)):
            rows, tokens = rows.nonzero().squeeze(1), tokens.nonzero().squeeze(1)
            part_extend = extend_lens[rows]
            part = ForwardBatch(
                ForwardMode.DECODE if bool((part_extend == 1).all()) else ForwardMode.EXTEND,
                batch.input_ids[tokens],
                batch.positions[tokens],
                batch.out_cache_loc[tokens],
                batch.req_pool_indices[rows],
                batch.seq_lens[rows],
                part_extend,
                torch.empty(0, dtype=torch.int64),  # logits are the model's, not a part's
            )
            parts.append((tokens, part))
        return parts

    def _plan(self, batch: ForwardBatch, window: int | None = None) -> AttentionPlan:
        """One plan for the whole batch on the gathering or in-place target."""
        if window is not None:
            return self._window_plan(batch, window)
        seq_lens, extend_lens = batch.seq_lens, batch.extend_lens
        B, T = batch.batch_size, batch.num_tokens
        prefix_lens = seq_lens - extend_lens  # [B]
        decode = batch.mode is ForwardMode.DECODE
        E = 1 if decode else int(extend_lens.max())
        in_place = self.max_in_place_extend >= E
        # Request of each flat token (None in decode, where token b is request b).
        token_req = None if decode else torch.repeat_interleave(torch.arange(B), extend_lens)
        if B == 1 and int(prefix_lens[0]) == 0 and not in_place:  # a long fresh prompt
            own = ProblemSet(
                Method.PER_PROBLEM,
                None,
                token_req,
                torch.arange(1, T + 1),
                batch.out_cache_loc[None],
                PerProblemLayout((T,), (None,)),
            )
            return AttentionPlan(batch.out_cache_loc, own, ())
        tuning = self.tuning
        min_saving = tuning.min_segment_saving
        if in_place:
            min_saving = (
                tuning.min_in_place_decode_segment_saving
                if decode
                else tuning.min_in_place_segment_saving
            )
        kv_indices, levels, own_start = self._prefix_tree(batch, prefix_lens, min_saving)
        if in_place:  # a query row per token, over its request's own KV up to itself
            own_lens = seq_lens - own_start  # [B]
            own = ProblemSet(
                Method.IN_PLACE,
                None,
                token_req,
                _own_limits(own_lens, prefix_lens, own_start, extend_lens, token_req),
                _own_slots(kv_indices, own_start, own_lens),
            )
            # Decode steps have few queries per segment: one kernel call per level beats a
            # gather. Extends gather each segment once for all its tokens.
            method = Method.IN_PLACE if decode else Method.GATHERED
            shared = tuple(_level(level, token_req, B, T, method) for level in levels)
            return AttentionPlan(batch.out_cache_loc, own, shared)
        shared_pairs = _shared_pairs(levels, extend_lens)
        ragged = self._pads_wastefully(E, seq_lens - own_start, extend_lens, shared_pairs)
        if (
            ragged
            and levels
            and tuning.min_compute_bound_extend <= E
            and not self._pads_wastefully(E, seq_lens, extend_lens)
        ):
            # The own parts pad badly even next to the segments, but whole sequences pad well:
            # one padded problem beats a call per request plus a merge per level.
            levels, own_start, ragged = (), torch.zeros_like(own_start), False
        own_lens = seq_lens - own_start  # [B]
        own_slots = _own_slots(kv_indices, own_start, own_lens)  # [B, Lo]
        limits = _own_limits(own_lens, prefix_lens, own_start, extend_lens, token_req)
        if ragged:
            layout = PerProblemLayout(
                tuple(extend_lens.tolist()),
                tuple(
                    kv_indices[b, start:end] if end > start else None
                    for b, (start, end) in enumerate(
                        zip(own_start.tolist(), prefix_lens.tolist(), strict=True)
                    )
                ),
            )
            own = ProblemSet(Method.PER_PROBLEM, None, token_req, limits, own_slots, layout)
        else:
            layout = _padded_layout(
                batch, own_slots, prefix_lens, own_start, own_lens, E, self.kv_dtype
            )
            own = ProblemSet(Method.PADDED, None, token_req, limits, own_slots, layout)
        shared = tuple(_level(level, token_req, B, T, Method.GATHERED) for level in levels)
        return AttentionPlan(batch.out_cache_loc, own, shared)

    def _window_plan(self, batch: ForwardBatch, window: int) -> AttentionPlan:
        """Each request's new tokens over its last `window` positions, causal, as one own pass
        (no shared levels: a window rarely covers a whole shared prefix). The own part starts
        at the first position the request's first new token sees; later new tokens whose
        window starts past it get `starts`, which only the padded method's mask honours, so
        such batches gather; the others read in place where the extend allows."""
        seq_lens, extend_lens = batch.seq_lens, batch.extend_lens
        B = batch.batch_size
        prefix_lens = seq_lens - extend_lens  # [B]
        decode = batch.mode is ForwardMode.DECODE
        E = 1 if decode else int(extend_lens.max())
        token_req = None if decode else torch.repeat_interleave(torch.arange(B), extend_lens)
        own_start = (prefix_lens - (window - 1)).clamp(min=0)  # [B]
        own_lens = seq_lens - own_start  # [B]
        kv_indices = self.req_table.table[batch.req_pool_indices, : int(seq_lens.max())]
        own_slots = _own_slots(kv_indices, own_start, own_lens)  # [B, Lo]
        limits = _own_limits(own_lens, prefix_lens, own_start, extend_lens, token_req)  # [T]
        req = torch.arange(B) if token_req is None else token_req  # [T]
        positions = own_start[req] + limits - 1  # [T] each token's position in its request
        starts = (positions - (window - 1)).clamp(min=0) - own_start[req]  # [T]
        cut = bool(starts.any())
        if not cut and self.max_in_place_extend >= E:
            own = ProblemSet(Method.IN_PLACE, None, token_req, limits, own_slots)
            return AttentionPlan(batch.out_cache_loc, own, ())
        layout = _padded_layout(
            batch, own_slots, prefix_lens, own_start, own_lens, E, self.kv_dtype, window
        )
        own = ProblemSet(
            Method.PADDED, None, token_req, limits, own_slots, layout, starts if cut else None
        )
        return AttentionPlan(batch.out_cache_loc, own, ())

    def _prefix_tree(
        self, batch: ForwardBatch, prefix_lens: torch.Tensor, min_saving: int
    ) -> tuple[torch.Tensor, Levels, torch.Tensor]:
        """The batch's rows of the req-to-token table ([B, L]), the shared segments worth
        `min_saving` by depth, and where each request's own part starts ([B])."""
        kv_indices = self.req_table.table[batch.req_pool_indices, : int(batch.seq_lens.max())]
        levels, own_start = find_shared_segments(
            kv_indices, prefix_lens, self.tuning.min_shared_prefix, min_saving
        )
        return kv_indices, levels, own_start

    def _pads_wastefully(
        self, E: int, kv_lens: torch.Tensor, extend_lens: torch.Tensor, shared_pairs: int = 0
    ) -> bool:
        """Would padding every request to E queries and the longest KV (`kv_lens`, [B])
        multiply the (query, key) pairs of the batch's attention by more than the tuning's
        `ragged_waste_ratio`? The shared segments' `shared_pairs` count on both sides: short
        own parts behind a long shared prefix may pad badly on their own and still cost little
        next to the prefix."""
        padded_pairs = kv_lens.shape[0] * E * int(kv_lens.max()) + shared_pairs
        exact_pairs = float((extend_lens * (kv_lens - extend_lens / 2)).sum()) + shared_pairs
        return padded_pairs > self.tuning.ragged_waste_ratio * exact_pairs

    def _segment_plan(self, batch: ForwardBatch) -> AttentionPlan:
        """Every pass as the AMX kernel's flattened problems. A shared segment is worth taking
        at a small saving there: it computes the same pairs as the own parts would, but packs
        the prefix's K/V once instead of once per request."""
        seq_lens, extend_lens = batch.seq_lens, batch.extend_lens
        B, T = batch.batch_size, batch.num_tokens
        prefix_lens = seq_lens - extend_lens  # [B]
        kv_indices, levels, own_start = self._prefix_tree(
            batch, prefix_lens, self.tuning.amx_min_segment_saving
        )
        token_req = torch.repeat_interleave(torch.arange(B), extend_lens)  # [T]
        own_lens = seq_lens - own_start  # [B]
        limits = _own_limits(own_lens, prefix_lens, own_start, extend_lens, token_req)
        columns = torch.arange(kv_indices.shape[1])[None, :]  # [1, L]
        in_own = (columns >= own_start[:, None]) & (columns < seq_lens[:, None])  # [B, L]
        first_token = torch.cumsum(extend_lens, 0) - extend_lens  # [B]
        flat = SegmentProblems(
            token_offsets=torch.cat([first_token, extend_lens.sum().view(1)]),
            tokens=torch.arange(T),
            limits=limits,
            slot_offsets=torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(own_lens, 0)]),
            slots=kv_indices[in_own].contiguous(),
        )
        own_slots = _own_slots(kv_indices, own_start, own_lens)
        own = ProblemSet(Method.SEGMENT, None, token_req, limits, own_slots, flat)
        every_token = torch.arange(T)
        shared = []
        for level in levels:
            gathered = _level(level, token_req, B, T, Method.SEGMENT)
            tokens = [every_token if t is None else t for t in gathered.layout.tokens]
            layout = SegmentProblems.build(tokens, list(gathered.layout.slots))
            shared.append(dataclasses.replace(gathered, layout=layout))
        return AttentionPlan(batch.out_cache_loc, own, tuple(shared))


def _own_limits(
    own_lens: torch.Tensor,  # [B] own keys of each request after this step
    prefix_lens: torch.Tensor,  # [B]
    own_start: torch.Tensor,  # [B]
    extend_lens: torch.Tensor,  # [B]
    token_req: torch.Tensor | None,  # [T] request of each token (None: decode)
) -> torch.Tensor:  # [T]
    """Own keys each token sees: an extend's i-th new token, its cached own part and itself
    and the new tokens before it."""
    if token_req is None:
        return own_lens
    first = torch.cumsum(extend_lens, 0) - extend_lens  # [B] flat index of each first token
    offsets = torch.arange(token_req.shape[0]) - first[token_req]  # [T]
    return (prefix_lens - own_start)[token_req] + offsets + 1


def _own_slots(kv_indices: torch.Tensor, own_start: torch.Tensor, own_lens: torch.Tensor):
    """[B, Lo] KV slots of each request's own part, from column own_start[b] of `kv_indices`
    ([B, L]); entries past own_lens[b] are arbitrary slots of the row (mask or ignore them)."""
    if not bool(own_start.any()):
        return kv_indices[:, : int(own_lens.max())]
    offsets = torch.arange(int(own_lens.max()))  # [Lo]
    columns = (own_start[:, None] + offsets[None, :]).clamp(max=kv_indices.shape[1] - 1)
    return kv_indices.gather(1, columns)


def _padded_layout(
    batch, own_slots, prefix_lens, own_start, own_lens, E, dtype: torch.dtype, window=None
) -> PaddedLayout:
    B, T = batch.batch_size, batch.num_tokens
    extend_lens = batch.extend_lens
    offsets = torch.arange(own_slots.shape[1])  # [Lo]
    in_range = offsets[None, :] < own_lens[:, None]  # [B, Lo]
    slots = torch.where(in_range, own_slots, 0)  # [B, Lo]
    key_pos = own_start[:, None] + offsets[None, :]  # [B, Lo]
    query_pos = prefix_lens[:, None] + torch.arange(E)[None, :]  # [B, E]
    # Padded query rows (e >= extend_len) see keys up to their fake position; their outputs
    # are discarded. Every row allows at least its first own key, so no row is all -inf.
    allowed = (key_pos[:, None, :] <= query_pos[:, :, None]) & in_range[:, None, :]
    if window is not None:  # sliding window: only the last `window` positions, itself included
        allowed &= key_pos[:, None, :] > query_pos[:, :, None] - window
        allowed[:, :, 0] |= ~allowed.any(dim=-1)  # padded rows past the window: keep one key
    allowed = allowed[:, None]  # [B, 1, E, Lo]: the same for every head
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, float("-inf"))
    q_dest = None
    if batch.mode is ForwardMode.EXTEND and not bool((extend_lens == E).all()):
        starts = torch.repeat_interleave(torch.arange(B) * E, extend_lens)  # [T]
        firsts = torch.repeat_interleave(
            torch.cumsum(extend_lens, 0) - extend_lens, extend_lens
        )  # [T] flat index of each row's first
        q_dest = starts + torch.arange(T) - firsts
    return PaddedLayout(slots.reshape(-1), mask, q_dest, B, E)


def _level(
    level: tuple[SharedSegment, ...],
    token_req: torch.Tensor | None,  # [T] request of each token (None: decode, token b is b)
    batch_size: int,
    num_tokens: int,
    method: Method,
) -> ProblemSet:
    """One level of shared segments as a pass: each segment's requests' tokens, segment after
    segment, over its slots (a row of one table padded to the longest segment)."""
    tokens = tuple(_segment_tokens(segment, token_req) for segment in level)
    lengths = torch.tensor([len(segment.slots) for segment in level])  # [S]
    slots = torch.zeros(len(level), int(lengths.max()), dtype=torch.int64)  # [S, P]
    for row, segment in enumerate(level):
        slots[row, : len(segment.slots)] = segment.slots
    if tokens[0] is None:  # the whole batch over one prefix (then the only segment)
        level_tokens, counts = None, torch.tensor([num_tokens])
    else:
        level_tokens = torch.cat(tokens)
        counts = torch.tensor([len(t) for t in tokens])
    token_problem = torch.repeat_interleave(torch.arange(len(level)), counts)  # [Tl]
    layout = GatheredLayout(tokens, tuple(segment.slots for segment in level))
    return ProblemSet(method, level_tokens, token_problem, lengths[token_problem], slots, layout)


def _segment_tokens(segment: SharedSegment, token_req: torch.Tensor | None) -> torch.Tensor | None:
    """The flat tokens of a segment's requests (None: every token)."""
    if segment.rows is None or token_req is None:
        return segment.rows
    return torch.isin(token_req, segment.rows).nonzero().squeeze(1)


def _shared_pairs(levels: Levels, extend_lens: torch.Tensor) -> int:
    """(query, key) pairs of the shared segments: each group's new tokens x its prefix."""
    return sum(
        int(extend_lens.sum() if segment.rows is None else extend_lens[segment.rows].sum())
        * len(segment.slots)
        for level in levels
        for segment in level
    )
