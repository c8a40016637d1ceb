"""Attention backend on the native segment kernel (`segment_kernel.py`, AMX tiles).

Same contract as `TorchSDPABackend` (`prepare(batch)` once per batch, `forward(layer, q, k, v,
meta)` per layer), but every part of a batch reads the KV pool in place, so nothing is gathered,
padded or repeated per query head:

    own problems:    each request's new tokens over its own KV (from the end of its shared
                     segments to its new tokens), causal; every token of the batch is in one;
    shared levels:   the prefixes groups of requests share (`find_shared_segments`), each one
                     problem for all the group's tokens, merged into the own result by
                     log-sum-exp, level by level.

A shared segment is always worth taking here: it computes the same (query, key) pairs as the own
parts would, but packs the prefix's K/V once instead of once per request, and fills the tiles of
decode steps (one token of three query heads per request) with a whole group's rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from radixgen.runtime.cache.kv_pool import KVPool
from radixgen.runtime.cache.req_table import ReqToTokenTable
from radixgen.runtime.kernels.segment_attention import SegmentAttentionKernel, SegmentProblems
from radixgen.runtime.model.attention import TokenSegment, find_shared_segments, token_levels
from radixgen.runtime.model.batch import ForwardBatch

# A shared segment must spare re-packing at least this many prefix tokens, (requests - 1) x its
# length, to pay for its own kernel call per layer.
MIN_SEGMENT_SAVING = 256


@dataclass(frozen=True)
class SegmentMetadata:
    out_cache_loc: torch.Tensor  # [T] slots receiving the new K/V
    own: SegmentProblems  # one problem per request, covering every token
    shared_levels: tuple[SegmentProblems, ...]  # by nesting depth; tokens disjoint per level


class SegmentKernelBackend:
    def __init__(
        self,
        kv_pool: KVPool,
        req_table: ReqToTokenTable,
        num_heads: int,
        num_kv_heads: int,
        kernel: SegmentAttentionKernel,
    ):
        self.kv_pool = kv_pool
        self.req_table = req_table
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.kernel = kernel

    def prepare(self, batch: ForwardBatch) -> SegmentMetadata:
        seq_lens, extend_lens = batch.seq_lens, batch.extend_lens
        prefix_lens = seq_lens - extend_lens  # [B]
        kv_indices = self.req_table.table[batch.req_pool_indices, : int(seq_lens.max())]  # [B, L]
        levels, own_start = find_shared_segments(
            kv_indices, prefix_lens, min_saving=MIN_SEGMENT_SAVING
        )
        token_req = torch.repeat_interleave(torch.arange(batch.batch_size), extend_lens)  # [T]
        own = _own_problems(kv_indices, own_start, prefix_lens, seq_lens, extend_lens, token_req)
        shared = tuple(
            _level_problems(level, token_req.shape[0]) for level in token_levels(levels, token_req)
        )
        return SegmentMetadata(batch.out_cache_loc, own, shared)

    def forward(
        self,
        layer: int,
        q: torch.Tensor,  # [T, H*D]
        k: torch.Tensor,  # [T, Hkv*D]
        v: torch.Tensor,  # [T, Hkv*D]
        meta: SegmentMetadata,
    ) -> torch.Tensor:  # [T, H*D]
        T = q.shape[0]
        Hkv, G = self.num_kv_heads, self.num_heads // self.num_kv_heads
        D = q.shape[1] // self.num_heads
        self.kv_pool.write(layer, meta.out_cache_loc, k.view(T, Hkv, D), v.view(T, Hkv, D))
        k_buf, v_buf = self.kv_pool.buffers(layer)  # [S, Hkv, D] each
        out = torch.empty(T, Hkv, G, D, dtype=torch.float32)
        lse = torch.empty(T, Hkv, G, dtype=torch.float32)
        self.kernel(q, k_buf, v_buf, meta.own, out, lse)
        for level in meta.shared_levels:
            self.kernel(q, k_buf, v_buf, level, out, lse, accumulate=True)
        return out.to(q.dtype).view(T, Hkv * G * D)


def _own_problems(
    kv_indices: torch.Tensor,  # [B, L]
    own_start: torch.Tensor,  # [B] first KV position after the request's shared segments
    prefix_lens: torch.Tensor,  # [B]
    seq_lens: torch.Tensor,  # [B]
    extend_lens: torch.Tensor,  # [B]
    token_req: torch.Tensor,  # [T] request of each flat token
) -> SegmentProblems:
    """Request b: its new tokens (flat rows, in order) over kv_indices[b, own_start:seq_len];
    its i-th new token sees the own KV up to and including itself."""
    columns = torch.arange(kv_indices.shape[1])[None, :]  # [1, L]
    own = (columns >= own_start[:, None]) & (columns < seq_lens[:, None])  # [B, L]
    first_token = torch.cumsum(extend_lens, 0) - extend_lens  # [B]
    position_in_req = torch.arange(token_req.shape[0]) - first_token[token_req]  # [T]
    limits = (prefix_lens - own_start)[token_req] + position_in_req + 1  # [T]
    return SegmentProblems(
        token_offsets=torch.cat([first_token, extend_lens.sum().view(1)]),
        tokens=torch.arange(token_req.shape[0]),
        limits=limits,
        slot_offsets=torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(own.sum(1), 0)]),
        slots=kv_indices[own].contiguous(),
    )


def _level_problems(level: tuple[TokenSegment, ...], num_tokens: int) -> SegmentProblems:
    """Each segment of a level: all its requests' tokens over its common slots."""
    every_token = torch.arange(num_tokens)
    tokens = [every_token if segment.tokens is None else segment.tokens for segment in level]
    return SegmentProblems.build(tokens, [segment.slots for segment in level])
