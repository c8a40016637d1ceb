"""Attention over the token-granular KV pool, behind a small backend interface.

`prepare(batch)` builds per-batch metadata once (gather indices, masks); `forward(layer, q, k, v,
meta)` runs per layer: it writes the new K/V into the pool, gathers each request's whole KV and
calls `scaled_dot_product_attention`. A faster kernel can replace `TorchSDPABackend` without
touching the model.

Grouped-query attention is computed by folding the query heads that share a KV head into the
query-length axis (`[B, Hkv, G*E, D]`), which avoids materialising repeated K/V and is several
times faster on CPU than SDPA's own `enable_gqa` path with a mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from radixgen.runtime.cache.kv_pool import KVPool
from radixgen.runtime.cache.req_table import ReqToTokenTable
from radixgen.runtime.model.batch import ForwardBatch, ForwardMode


@dataclass(frozen=True)
class AttentionMetadata:
    out_cache_loc: torch.Tensor  # [T] slots receiving the new K/V
    # Fast path: one request with no cached prefix -> plain causal attention on q/k/v.
    causal_only: bool
    kv_indices: torch.Tensor | None  # [B, L] KV slots per request, padded (pad entries masked)
    mask: torch.Tensor | None  # [B, 1, G*E, L] bool, True = attend
    q_dest: torch.Tensor | None  # [T] row of each flat token in the padded [B*E] layout
    max_extend: int  # E


class TorchSDPABackend:
    """Reference attention backend built on `torch.nn.functional.scaled_dot_product_attention`."""

    def __init__(
        self, kv_pool: KVPool, req_table: ReqToTokenTable, num_heads: int, num_kv_heads: int
    ):
        self.kv_pool = kv_pool
        self.req_table = req_table
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.group = num_heads // num_kv_heads

    def prepare(self, batch: ForwardBatch) -> AttentionMetadata:
        seq_lens, extend_lens = batch.seq_lens, batch.extend_lens
        if batch.batch_size == 1 and int(seq_lens[0]) == int(extend_lens[0]):
            return AttentionMetadata(batch.out_cache_loc, True, None, None, None, batch.num_tokens)
        max_len = int(seq_lens.max())
        max_extend = 1 if batch.mode is ForwardMode.DECODE else int(extend_lens.max())
        kv_indices = self.req_table.table[batch.req_pool_indices, :max_len]  # [B, L]
        key_pos = torch.arange(max_len)  # [L]
        prefix_lens = seq_lens - extend_lens  # [B]
        query_pos = prefix_lens[:, None] + torch.arange(max_extend)[None, :]  # [B, E]
        mask = key_pos[None, None, :] <= query_pos[:, :, None]  # [B, E, L]
        # Padded query rows (e >= extend_len) attend to everything up to their fake position;
        # their outputs are discarded, and position 0 is always allowed, so no row is all-masked.
        B, E, L = mask.shape
        mask = mask[:, None, None].expand(B, 1, self.group, E, L).reshape(B, 1, self.group * E, L)
        q_dest = None
        if batch.mode is ForwardMode.EXTEND and not bool((extend_lens == max_extend).all()):
            starts = torch.repeat_interleave(torch.arange(B) * max_extend, extend_lens)  # [T]
            offsets = torch.arange(batch.num_tokens) - torch.repeat_interleave(
                torch.cumsum(extend_lens, 0) - extend_lens, extend_lens
            )
            q_dest = starts + offsets
        return AttentionMetadata(batch.out_cache_loc, False, kv_indices, mask, q_dest, E)

    def forward(
        self,
        layer: int,
        q: torch.Tensor,  # [T, H*D]
        k: torch.Tensor,  # [T, Hkv*D]
        v: torch.Tensor,  # [T, Hkv*D]
        meta: AttentionMetadata,
    ) -> torch.Tensor:  # [T, H*D]
        T = q.shape[0]
        H, Hkv, G = self.num_heads, self.num_kv_heads, self.group
        D = q.shape[1] // H
        k = k.view(T, Hkv, D)
        v = v.view(T, Hkv, D)
        self.kv_pool.write(layer, meta.out_cache_loc, k, v)
        if meta.causal_only:
            out = F.scaled_dot_product_attention(
                q.view(T, H, D).transpose(0, 1),  # [H, T, D]
                k.transpose(0, 1),  # [Hkv, T, D]
                v.transpose(0, 1),
                is_causal=True,
                enable_gqa=True,
            )  # [H, T, D]
            return out.transpose(0, 1).reshape(T, H * D)
        k_buf, v_buf = self.kv_pool.buffers(layer)  # [S, Hkv, D] each
        keys = k_buf[meta.kv_indices].transpose(1, 2)  # [B, Hkv, L, D]
        values = v_buf[meta.kv_indices].transpose(1, 2)
        B, E = keys.shape[0], meta.max_extend
        if meta.q_dest is not None:
            padded = q.new_zeros(B * E, H * D)
            padded[meta.q_dest] = q
            q = padded
        # [B*E, H*D] -> [B, E, Hkv, G, D] -> [B, Hkv, G, E, D] -> [B, Hkv, G*E, D]
        q = q.view(B, E, Hkv, G, D).permute(0, 2, 3, 1, 4).reshape(B, Hkv, G * E, D)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=meta.mask)
        # [B, Hkv, G*E, D] -> [B, E, Hkv, G, D] -> [B*E, H*D]
        out = out.view(B, Hkv, G, E, D).permute(0, 3, 1, 2, 4).reshape(B * E, H * D)
        return out if meta.q_dest is None else out[meta.q_dest]
