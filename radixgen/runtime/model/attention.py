"""Attention over the token-granular KV pool, behind a small backend interface.

`prepare(batch)` builds per-batch metadata once (gather indices, masks); `forward(layer, q, k, v,
meta)` runs per layer: it writes the new K/V into the pool, then attends. A faster kernel can
replace `TorchSDPABackend` without touching the model.

Shared-prefix ("cascade") attention over a tree of prefixes. Requests that reuse a radix-tree
prefix point at the same KV slots, so `prepare` finds, by comparing rows of the req-to-token table,
the prefixes that groups of the batch share: the system prompt every request starts with, the
article six forks of one program judge, the few-shot block of one subject. Each request's KV then
splits into segments, merged by their log-sum-exp:

    shared segments: every query of a group against the group's common prefix, as ONE attention
                     problem (the prefix K/V is gathered and read once, not once per request);
                     groups nest (all requests > one program's forks), at most one per depth;
    own part:        each request's queries against the rest of its own KV: for decode and
                     short extends all requests as one padded, masked problem; for long extends
                     one problem per request (causal over its new tokens, none of the padding).

With the native kernel (`decode_kernel.py`, bfloat16 or float32 on the CPU) own parts are read
in place from the pool instead of gathered and padded: decode steps, and extends, each new token
over its request's KV up to itself (float32 pools up to `MAX_IN_PLACE_EXTEND` new tokens per
request, fresh prompts included; bfloat16 pools, whose kernel path goes row by row, short ones).
Only widely shared prefixes split off as segments then (`MIN_IN_PLACE_SEGMENT_SAVING`, and for
decode steps, whose segments the kernel also reads in place, `MIN_IN_PLACE_DECODE_SEGMENT_SAVING`).

With 60 forks of 10 programs decoding over 400-token articles, a decode step reads one copy of
each article instead of six and runs 10 wide attention problems instead of 60 narrow ones.

Grouped-query attention folds the query heads that share a KV head into the query-length axis
(`[B, Hkv, G*E, D]`), avoiding repeated K/V. Every part uses PyTorch's CPU flash-attention kernel,
which accumulates in float32 and returns the log-sum-exp needed for the merge.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from radixgen.runtime.cache.kv_pool import KVPool
from radixgen.runtime.cache.req_table import ReqToTokenTable
from radixgen.runtime.kernels.decode_attention import DecodeAttentionKernel
from radixgen.runtime.model.batch import ForwardBatch, ForwardMode

MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth a second attention call
# A segment costs a few kernel calls per layer; it pays off once the KV it stops re-reading,
# (requests - 1) * prefix tokens, is at least this large.
MIN_SEGMENT_SAVING = 1024
# With the native kernel, re-reading a shared prefix in place costs little (its rows stay in
# cache between the requests that share it), so a segment must save more. Extends (gather + flash
# segments; one layer x 30, float32): 7 / 12 RAG questions of ~90 new tokens over a 210-token
# demo ran 1.29x / 1.22x faster without a segment, 6 forks x 30 tokens over 650 even, 48 forks
# over 650 1.09x faster with one.
MIN_IN_PLACE_SEGMENT_SAVING = 12 * 1024
# Decode steps read their segments in place too, a level of segments per kernel call (each
# segment's queries one register-tiled block). But the kernel already reads a prefix once for
# several requests on its own: float32 decode tokens whose rows share it run as one fork group
# (up to 16 requests), so a segment (plus a merge) wins only when very wide. One layer x 30,
# float32, EPYC, segment vs none: 8 programs x 6 forks over 650 tokens 57.5 vs 40.3 ms, 15
# requests over 470 11.6 vs 8.9, 24 over 400 14.7 vs 12.7, 16 over 1,500 24.0 vs 21.1; 32 over
# 1,000 45.0 vs 45.4, 48 over 650 32.4 vs 34.6.
MIN_IN_PLACE_DECODE_SEGMENT_SAVING = 32 * 1024
# Own parts run one problem per request when padding the batch to its longest extend and longest
# KV would multiply the (query, key) pairs by more than this; the per-request calls and merges
# cost more than a moderately padded batch (measured on 2 cores).
RAGGED_WASTE_RATIO = 2.0
# Shared segments save re-reading K/V, which bounds decode-like steps (a few queries per request).
# From this many new tokens per request an extend is compute-bound, and when segments would leave
# own parts that go one call per request, one padded problem over whole sequences is faster.
# (Few-shot batches, MMLU-style questions over one prefix, keep the segment: their short own
# parts pad well next to it, and segment + padded own parts beat one padded problem by ~15%.)
MIN_COMPUTE_BOUND_EXTEND = 16
# Extends of at most this many new tokens per request also run on the native kernel, blocks of
# each request's new tokens over its KV in place. float32 pools (register-tiled blocks), one
# layer, 2-core EPYC, against gather + flash attention: 1.2-2.8x faster on chat-, RAG- and
# judge-shaped batches (10 requests x 8-90 new tokens over 60-650 cached), 1.6x on six fresh
# 650-token prompts; one fresh prompt of 1,000 tokens 1.3x, of 2,000 tokens even.
MAX_IN_PLACE_EXTEND = 1024
# bfloat16 pools take the kernel's row-by-row path, which re-reads K/V per token: 11 requests
# over 250-word histories, 6.5 / 14.7 / 21.7 new tokens ran 1.07x / 1.08x / 1.09x faster than
# gather + flash, 29.9 tokens 0.97x, ~80 tokens 0.91x.
MAX_IN_PLACE_EXTEND_BFLOAT16 = 24


def _flash_with_lse(q, k, v, mask=None, is_causal=False):
    """(out [N, H, L, D], logsumexp [N, H, L] float32); mask is additive, q's dtype; is_causal
    aligns query i with key i (square problems). k and v may have fewer heads than q (grouped
    query attention: query head h reads KV head h // (H / Hkv))."""
    if q.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, is_causal=is_causal, attn_mask=mask
        )
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scores = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
    if is_causal:
        L, S = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(L, S, dtype=torch.bool).triu(1), float("-inf"))
    if mask is not None:
        scores = scores + mask.float()
    lse = torch.logsumexp(scores, dim=-1)
    return (torch.exp(scores - lse[..., None]) @ v.float()).to(q.dtype), lse


@dataclass(frozen=True)
class SharedSegment:
    """KV slots that a group of the batch's requests all hold at the same positions."""

    rows: torch.Tensor | None  # [Bg] batch rows of the group (None: every row)
    slots: torch.Tensor  # [P] the common KV slots


@dataclass(frozen=True)
class TokenSegment:
    """A shared segment as the attention reads it: which flat tokens attend to which slots."""

    tokens: torch.Tensor | None  # [Tg] flat token rows of the group's requests (None: all)
    slots: torch.Tensor  # [P]


@dataclass(frozen=True)
class InPlaceLevel:
    """One level of a decode step's shared segments as the native kernel reads them: every
    token of the level over its segment's slots, in place, in one call (a segment's tokens are
    consecutive, so its requests' queries form the kernel's register-tiled blocks)."""

    segments: tuple[TokenSegment, ...]
    tokens: torch.Tensor | None  # [Tl] flat tokens, segment after segment (None: all, in order)
    slots: torch.Tensor  # [S, P] each segment's slots, padded to the longest
    lens: torch.Tensor  # [Tl] the length of each token's segment
    token_rows: torch.Tensor  # [Tl] the segment of each token

    def __len__(self) -> int:
        return len(self.segments)


@dataclass(frozen=True)
class PaddedOwn:
    """Every request's own part as one problem, padded to [B, E] queries and [B, Lo] keys."""

    slots: torch.Tensor  # [B * Lo] KV slots after each request's shared segments, 0 = pad
    mask: torch.Tensor  # [B, 1, E, Lo] additive (0 or -inf), q's dtype
    q_dest: torch.Tensor | None  # [T] row of each flat token in the padded [B*E] layout
    batch_size: int  # B
    max_extend: int  # E


@dataclass(frozen=True)
class RaggedOwn:
    """One problem per request: its new tokens (causal) and its cached own KV (all visible)."""

    extend_lens: tuple[int, ...]  # E_b, in flat token order
    cached_slots: tuple[torch.Tensor | None, ...]  # [C_b] slots between segments and new tokens


@dataclass(frozen=True)
class InPlaceOwn:
    """Own parts read by the native kernel where they lie in the pool: each flat token's
    queries over the first lens[t] slots of its request's row (decode: token b is request b)."""

    slots: torch.Tensor  # [B, Lo] slots after each request's shared segments
    lens: torch.Tensor  # [T] own keys each token sees (an extend's new tokens: up to itself)
    token_rows: torch.Tensor | None  # [T] request of each token (None: decode, token b is b)


@dataclass(frozen=True)
class AttentionMetadata:
    out_cache_loc: torch.Tensor  # [T] slots receiving the new K/V
    # Shared segments by nesting depth; the segments of one depth have disjoint tokens.
    shared_levels: tuple[tuple[TokenSegment, ...] | InPlaceLevel, ...]
    own: PaddedOwn | RaggedOwn | InPlaceOwn


def _pads_wastefully(
    B: int, E: int, kv_lens: torch.Tensor, extend_lens: torch.Tensor, shared_pairs: int = 0
) -> bool:
    """Would padding every request to E queries and the longest KV (`kv_lens`, [B]) multiply the
    (query, key) pairs of the batch's attention by more than `RAGGED_WASTE_RATIO`? The shared
    segments' `shared_pairs` count on both sides: short own parts behind a long shared prefix
    may pad badly on their own and still cost little next to the prefix."""
    padded_pairs = B * E * int(kv_lens.max()) + shared_pairs
    exact_pairs = float((extend_lens * (kv_lens - extend_lens / 2)).sum()) + shared_pairs
    return padded_pairs > RAGGED_WASTE_RATIO * exact_pairs


def _shared_pairs(levels, extend_lens: torch.Tensor) -> int:
    """(query, key) pairs of the shared segments: each group's new tokens x its prefix."""
    return sum(
        int(extend_lens.sum() if segment.rows is None else extend_lens[segment.rows].sum())
        * len(segment.slots)
        for level in levels
        for segment in level
    )


def find_shared_segments(
    kv_indices: torch.Tensor,  # [B, L] KV slots of each request (padded past its length)
    prefix_lens: torch.Tensor,  # [B] cached tokens of each request
    min_len: int = MIN_SHARED_PREFIX,
    min_saving: int | None = None,
) -> tuple[tuple[tuple[SharedSegment, ...], ...], torch.Tensor]:
    """The prefix tree the batch's requests share: (segments by depth, own_start [B]).

    Contract: each segment lies inside the cached prefix of every row of its group, and the
    segments along one request's path tile its KV contiguously from position 0 to
    `own_start[b]`; the own part covers the rest. A segment is at least `min_len` tokens long
    and re-reads at least `min_saving` tokens fewer than the own parts would (default
    `MIN_SEGMENT_SAVING`); other common prefixes stay in the own parts.
    """
    if min_saving is None:
        min_saving = MIN_SEGMENT_SAVING
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


class TorchSDPABackend:
    """Attention built on PyTorch's scaled-dot-product / flash-attention kernels."""

    def __init__(
        self,
        kv_pool: KVPool,
        req_table: ReqToTokenTable,
        num_heads: int,
        num_kv_heads: int,
        decode_kernel: DecodeAttentionKernel | None = None,
    ):
        """`decode_kernel`: decode steps' own parts read the pool in place through it (no
        gather, no padding); None keeps every step on the torch kernels."""
        self.kv_pool = kv_pool
        self.req_table = req_table
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.group = num_heads // num_kv_heads
        self.decode_kernel = decode_kernel

    def prepare(self, batch: ForwardBatch) -> AttentionMetadata:
        seq_lens, extend_lens = batch.seq_lens, batch.extend_lens
        B = batch.batch_size
        prefix_lens = seq_lens - extend_lens  # [B]
        decode = batch.mode is ForwardMode.DECODE
        E = 1 if decode else int(extend_lens.max())
        in_place = self.decode_kernel is not None and self._fits_in_place(E)
        if B == 1 and int(prefix_lens[0]) == 0 and not in_place:  # a long fresh prompt
            own = RaggedOwn((batch.num_tokens,), (None,))
            return AttentionMetadata(batch.out_cache_loc, (), own)
        kv_indices = self.req_table.table[batch.req_pool_indices, : int(seq_lens.max())]  # [B, L]
        min_saving = None
        if in_place:
            min_saving = (
                MIN_IN_PLACE_DECODE_SEGMENT_SAVING if decode else MIN_IN_PLACE_SEGMENT_SAVING
            )
        levels, own_start = find_shared_segments(kv_indices, prefix_lens, min_saving=min_saving)
        own_lens = seq_lens - own_start  # [B]
        # Request of each flat token (None in decode, where token b is request b).
        token_req = None if decode else torch.repeat_interleave(torch.arange(B), extend_lens)
        if in_place:  # a query row per token, over its request's own KV up to itself
            own_slots = _own_slots(kv_indices, own_start, own_lens)  # [B, Lo]
            if token_req is None:
                own = InPlaceOwn(own_slots, own_lens, None)
            else:
                firsts = torch.cumsum(extend_lens, 0) - extend_lens  # [B] flat index of first
                offsets = torch.arange(batch.num_tokens) - firsts[token_req]  # [T]
                token_lens = (prefix_lens - own_start)[token_req] + offsets + 1  # [T]
                own = InPlaceOwn(own_slots, token_lens, token_req)
            shared_levels = token_levels(levels, token_req)
            if decode:  # few queries per segment: one kernel call per level beats a gather
                shared_levels = tuple(_in_place_level(level, B) for level in shared_levels)
            return AttentionMetadata(batch.out_cache_loc, shared_levels, own)
        shared_pairs = _shared_pairs(levels, extend_lens)
        ragged = _pads_wastefully(B, E, own_lens, extend_lens, shared_pairs)
        if (
            ragged
            and levels
            and E >= MIN_COMPUTE_BOUND_EXTEND
            and not _pads_wastefully(B, E, seq_lens, extend_lens)
        ):
            # The own parts pad badly even next to the segments, but whole sequences pad well:
            # one padded problem beats a call per request plus a merge per level.
            levels, own_start, own_lens, ragged = (), torch.zeros_like(own_start), seq_lens, False
        if ragged:
            own = RaggedOwn(
                tuple(extend_lens.tolist()),
                tuple(
                    kv_indices[b, start:end] if end > start else None
                    for b, (start, end) in enumerate(
                        zip(own_start.tolist(), prefix_lens.tolist(), strict=True)
                    )
                ),
            )
        else:
            own = self._padded_own(batch, kv_indices, prefix_lens, own_start, own_lens, E)
        return AttentionMetadata(batch.out_cache_loc, token_levels(levels, token_req), own)

    def _fits_in_place(self, new_tokens: int) -> bool:
        """May own parts of `new_tokens` per request run on the native kernel?"""
        if self.kv_pool.k.dtype == torch.float32:
            return new_tokens <= MAX_IN_PLACE_EXTEND
        return new_tokens <= MAX_IN_PLACE_EXTEND_BFLOAT16

    def _padded_own(self, batch, kv_indices, prefix_lens, own_start, own_lens, E) -> PaddedOwn:
        B, T = batch.batch_size, batch.num_tokens
        extend_lens = batch.extend_lens
        own_len = int(own_lens.max())
        offsets = torch.arange(own_len)  # [Lo]
        in_range = offsets[None, :] < own_lens[:, None]  # [B, Lo]
        own = torch.where(in_range, _own_slots(kv_indices, own_start, own_lens), 0)  # [B, Lo]
        key_pos = own_start[:, None] + offsets[None, :]  # [B, Lo]
        query_pos = prefix_lens[:, None] + torch.arange(E)[None, :]  # [B, E]
        # Padded query rows (e >= extend_len) see keys up to their fake position; their outputs
        # are discarded. Every row allows at least its first own key, so no row is all -inf.
        allowed = (key_pos[:, None, :] <= query_pos[:, :, None]) & in_range[:, None, :]
        allowed = allowed[:, None]  # [B, 1, E, Lo]: the same for every head
        mask = torch.zeros(allowed.shape, dtype=self.kv_pool.k.dtype)
        mask.masked_fill_(~allowed, float("-inf"))
        q_dest = None
        if batch.mode is ForwardMode.EXTEND and not bool((extend_lens == E).all()):
            starts = torch.repeat_interleave(torch.arange(B) * E, extend_lens)  # [T]
            firsts = torch.repeat_interleave(
                torch.cumsum(extend_lens, 0) - extend_lens, extend_lens
            )  # [T] flat index of each row's first
            q_dest = starts + torch.arange(T) - firsts
        return PaddedOwn(own.reshape(-1), mask, q_dest, B, E)

    def forward(
        self,
        layer: int,
        q: torch.Tensor,  # [T, H*D]
        k: torch.Tensor,  # [T, Hkv*D]
        v: torch.Tensor,  # [T, Hkv*D]
        meta: AttentionMetadata,
    ) -> torch.Tensor:  # [T, H*D]
        T = q.shape[0]
        Hkv, G = self.num_kv_heads, self.group
        D = q.shape[1] // self.num_heads
        k = k.view(T, Hkv, D)
        v = v.view(T, Hkv, D)
        self.kv_pool.write(layer, meta.out_cache_loc, k, v)
        k_buf, v_buf = self.kv_pool.buffers(layer)  # [S, Hkv, D] each
        if isinstance(meta.own, InPlaceOwn):
            own = meta.own
            out, lse = self.decode_kernel(q, k_buf, v_buf, own.slots, own.lens, own.token_rows)
        elif isinstance(meta.own, RaggedOwn):
            out, lse = self._ragged_own(q.view(T, Hkv, G, D), k, v, k_buf, v_buf, meta.own)
        else:
            out, lse = self._padded_own_attention(q, k_buf, v_buf, meta.own)
        if meta.shared_levels:  # out: [T, Hkv, G, D], lse: [T, Hkv, G]
            q_tokens = q.view(T, Hkv, G, D)
            out = out.float()
            for level in meta.shared_levels:
                out, lse = self._merge_level(q_tokens, out, lse, k_buf, v_buf, level)
        return out.to(q.dtype).reshape(T, Hkv * G * D)

    def _padded_own_attention(self, q, k_buf, v_buf, own: PaddedOwn):
        """Flat (out [T, Hkv, G, D], lse [T, Hkv, G]) of every request's own part at once."""
        Hkv, G = self.num_kv_heads, self.group
        B, E = own.batch_size, own.max_extend
        D = q.shape[1] // self.num_heads
        if own.q_dest is not None:
            padded = q.new_zeros(B * E, q.shape[1])
            padded[own.q_dest] = q
            q = padded
        q = q.view(B, E, Hkv * G, D).transpose(1, 2)  # [B, H, E, D]
        own_k, own_v = _gather_kv(k_buf, v_buf, own.slots, B)  # [B, Hkv, Lo, D] each
        # Grouped-query attention in the kernel: query head h reads KV head h // G.
        out, lse = _flash_with_lse(q, own_k, own_v, own.mask)  # [B, H, E, D], [B, H, E]
        out = out.transpose(1, 2).reshape(B * E, Hkv, G, D)
        lse = lse.transpose(1, 2).reshape(B * E, Hkv, G)
        if own.q_dest is not None:
            out, lse = out[own.q_dest], lse[own.q_dest]
        return out, lse

    def _ragged_own(self, q, k, v, k_buf, v_buf, own: RaggedOwn):
        """Flat (out [T, Hkv, G, D], lse [T, Hkv, G]), one attention problem per request.

        q: [T, Hkv, G, D]; k, v: [T, Hkv, D] of this batch's tokens.
        """
        Hkv, G = self.num_kv_heads, self.group
        D = q.shape[-1]
        outs, lses, first = [], [], 0
        for n, cached in zip(own.extend_lens, own.cached_slots, strict=True):
            # [n, Hkv, G, D] -> [1, Hkv*G, n, D]: query heads, and folded [1, Hkv, G*n, D]
            q_req = q[first : first + n].permute(1, 2, 0, 3).reshape(1, Hkv * G, n, D)
            k_new = k[first : first + n].repeat_interleave(G, dim=1).transpose(0, 1)[None]
            v_new = v[first : first + n].repeat_interleave(G, dim=1).transpose(0, 1)[None]
            out, lse = _flash_with_lse(q_req, k_new, v_new, is_causal=True)  # [1, H, n, *]
            if cached is not None:
                cached_k, cached_v = _gather_kv(k_buf, v_buf, cached, 1)  # [1, Hkv, C, D]
                old_out, old_lse = _flash_with_lse(
                    q_req.reshape(1, Hkv, G * n, D), cached_k, cached_v
                )  # [1, Hkv, G*n, *]: the same rows as [1, H, n, *]
                old_out, old_lse = old_out.reshape(out.shape), old_lse.reshape(lse.shape)
                out, lse = _merge(out, lse, old_out, old_lse)
            # [1, Hkv*G, n, *] -> [n, Hkv, G, *]
            outs.append(out.reshape(Hkv, G, n, D).permute(2, 0, 1, 3))
            lses.append(lse.reshape(Hkv, G, n).permute(2, 0, 1))
            first += n
        if len(outs) == 1:
            return outs[0], lses[0]
        return torch.cat(outs), torch.cat(lses)

    def _merge_level(self, q, out, lse, k_buf, v_buf, level):
        """Attend each segment's tokens to its prefix at once; merge into (out, lse).

        q: [T, Hkv, G, D]; out: [T, Hkv, G, D] float32; lse: [T, Hkv, G] float32. The segments
        of one level have disjoint tokens. An `InPlaceLevel` goes through the native kernel in
        one call; otherwise each segment's K/V is gathered for a flash-attention call.
        """
        Hkv, G, D = q.shape[1:]
        if isinstance(level, InPlaceLevel):
            level_q = q if level.tokens is None else q.index_select(0, level.tokens)
            level_out, level_lse = self.decode_kernel(
                level_q.reshape(level_q.shape[0], Hkv * G * D),
                k_buf,
                v_buf,
                level.slots,
                level.lens,
                level.token_rows,
            )
            return _merge_tokens(out, lse, level.tokens, level_out, level_lse)
        parts_out, parts_lse, parts_tokens = [], [], []
        for segment in level:
            group_q = q if segment.tokens is None else q.index_select(0, segment.tokens)
            Tg = group_q.shape[0]
            shared_k, shared_v = _gather_kv(k_buf, v_buf, segment.slots, 1)  # [1, Hkv, P, D]
            # [Tg, Hkv, G, D] -> [1, Hkv, Tg*G, D]: one problem for the whole group
            all_q = group_q.transpose(0, 1).reshape(1, Hkv, Tg * G, D)
            seg_out, seg_lse = _flash_with_lse(all_q, shared_k, shared_v)
            parts_out.append(seg_out.reshape(Hkv, Tg, G, D).transpose(0, 1))  # [Tg, Hkv, G, D]
            parts_lse.append(seg_lse.reshape(Hkv, Tg, G).transpose(0, 1))  # [Tg, Hkv, G]
            parts_tokens.append(segment.tokens)
        if len(level) == 1 and parts_tokens[0] is None:  # one segment over the whole batch
            return _merge(out, lse, parts_out[0], parts_lse[0])
        return _merge_tokens(
            out, lse, torch.cat(parts_tokens), torch.cat(parts_out), torch.cat(parts_lse)
        )


def _merge_tokens(out, lse, tokens: torch.Tensor | None, part_out, part_lse):
    """Merge a result over other keys for `tokens` ([Tl]; None: every token) into (out, lse)."""
    if tokens is None:
        return _merge(out, lse, part_out, part_lse)
    merged_out, merged_lse = _merge(
        out.index_select(0, tokens), lse.index_select(0, tokens), part_out, part_lse
    )
    return out.index_copy(0, tokens, merged_out), lse.index_copy(0, tokens, merged_lse)


def _in_place_level(level: tuple[TokenSegment, ...], num_tokens: int) -> InPlaceLevel:
    """The kernel's inputs for one level: its tokens segment by segment, each segment's slots a
    row of one padded table."""
    longest = max(len(segment.slots) for segment in level)
    slots = torch.zeros(len(level), longest, dtype=torch.int64)  # [S, P]
    for row, segment in enumerate(level):
        slots[row, : len(segment.slots)] = segment.slots
    if level[0].tokens is None:  # the whole batch over one prefix (then the only segment)
        tokens, counts = None, torch.tensor([num_tokens])
    else:
        tokens = torch.cat([segment.tokens for segment in level])
        counts = torch.tensor([len(segment.tokens) for segment in level])
    segment_of_token = torch.repeat_interleave(torch.arange(len(level)), counts)  # [Tl]
    lens = torch.tensor([len(segment.slots) for segment in level])[segment_of_token]
    return InPlaceLevel(level, tokens, slots, lens, segment_of_token)


def _own_slots(kv_indices: torch.Tensor, own_start: torch.Tensor, own_lens: torch.Tensor):
    """[B, Lo] KV slots of each request's own part, from column own_start[b] of `kv_indices`
    ([B, L]); entries past own_lens[b] are arbitrary slots of the row (mask or ignore them)."""
    if not bool(own_start.any()):
        return kv_indices[:, : int(own_lens.max())]
    offsets = torch.arange(int(own_lens.max()))  # [Lo]
    columns = (own_start[:, None] + offsets[None, :]).clamp(max=kv_indices.shape[1] - 1)
    return kv_indices.gather(1, columns)


def _gather_kv(k_buf, v_buf, slots: torch.Tensor, rows: int):
    """K and V of `slots` ([rows * L]) from one layer's pool buffers, each [rows, Hkv, L, D]."""
    Hkv, D = k_buf.shape[1:]
    k = k_buf.index_select(0, slots).view(rows, -1, Hkv, D).transpose(1, 2)
    v = v_buf.index_select(0, slots).view(rows, -1, Hkv, D).transpose(1, 2)
    return k, v


def token_levels(levels, token_req: torch.Tensor | None) -> tuple[tuple[TokenSegment, ...], ...]:
    """Every level's segments as flat token rows (`token_req`: request of each token, [T];
    None in decode, where token b is request b)."""
    return tuple(tuple(_token_segment(segment, token_req) for segment in level) for level in levels)


def _token_segment(segment: SharedSegment, token_req: torch.Tensor | None) -> TokenSegment:
    """The flat tokens of a segment's requests (decode: one token per request, same rows)."""
    if segment.rows is None or token_req is None:
        return TokenSegment(segment.rows, segment.slots)
    tokens = torch.isin(token_req, segment.rows).nonzero().squeeze(1)
    return TokenSegment(tokens, segment.slots)


def _merge(out_a, lse_a, out_b, lse_b):
    """Combine two attention results over disjoint key sets by their log-sum-exp (float32)."""
    total = torch.logaddexp(lse_a, lse_b)
    out = (
        out_a.float() * torch.exp(lse_a - total)[..., None]
        + out_b.float() * torch.exp(lse_b - total)[..., None]
    )
    return out, total
