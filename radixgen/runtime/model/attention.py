"""Attention over the token-granular KV pool, behind a small backend interface.

`prepare(batch)` builds per-batch metadata once (gather indices, masks); `forward(layer, q, k, v,
meta)` runs per layer: it writes the new K/V into the pool, then attends. A faster kernel can
replace `TorchSDPABackend` without touching the model.

Shared-prefix ("cascade") attention. Requests that reuse one radix-tree prefix point at the same KV
slots, so the batch's common prefix is found once per batch by comparing the rows of the
req-to-token table. Attention then splits in two parts merged by their log-sum-exp:

    shared part: every query of the batch against the common prefix, as ONE attention problem
                 (the prefix K/V is gathered and read once, not once per request);
    own part:    each request's queries against the rest of its own KV (padded, masked).

With 64 requests decoding over a 1,000-token few-shot prefix this reads ~64x less KV per step.

Grouped-query attention folds the query heads that share a KV head into the query-length axis
(`[B, Hkv, G*E, D]`), avoiding repeated K/V. Both parts use PyTorch's CPU flash-attention kernel,
which accumulates in float32 and returns the log-sum-exp needed for the merge.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from radixgen.runtime.cache.kv_pool import KVPool
from radixgen.runtime.cache.req_table import ReqToTokenTable
from radixgen.runtime.model.batch import ForwardBatch, ForwardMode

MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth a second attention call


def _flash_with_lse(q, k, v, mask=None):
    """(out [N, H, L, D], logsumexp [N, H, L] float32); mask is additive, q's dtype."""
    if q.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=mask)
    scores = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores + mask.float()
    lse = torch.logsumexp(scores, dim=-1)
    return (torch.exp(scores - lse[..., None]) @ v.float()).to(q.dtype), lse


@dataclass(frozen=True)
class AttentionMetadata:
    out_cache_loc: torch.Tensor  # [T] slots receiving the new K/V
    # Fast path: one request with no cached prefix -> plain causal attention on q/k/v.
    causal_only: bool
    shared_slots: torch.Tensor | None  # [P] KV slots of the prefix common to all requests
    own_slots: torch.Tensor | None  # [B * Lo] KV slots after the shared prefix, padded
    own_len: int  # Lo
    own_mask: torch.Tensor | None  # [B, 1, G*E, Lo] additive (0 or -inf), q's dtype
    q_dest: torch.Tensor | None  # [T] row of each flat token in the padded [B*E] layout
    batch_size: int  # B
    max_extend: int  # E


class TorchSDPABackend:
    """Attention built on PyTorch's scaled-dot-product / flash-attention kernels."""

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
        B, T = batch.batch_size, batch.num_tokens
        if B == 1 and int(seq_lens[0]) == int(extend_lens[0]):
            return AttentionMetadata(batch.out_cache_loc, True, None, None, 0, None, None, 1, T)
        max_len = int(seq_lens.max())
        E = 1 if batch.mode is ForwardMode.DECODE else int(extend_lens.max())
        kv_indices = self.req_table.table[batch.req_pool_indices, :max_len]  # [B, L]
        prefix_lens = seq_lens - extend_lens  # [B]
        shared = self._shared_prefix_len(kv_indices, prefix_lens)
        own = kv_indices[:, shared:]  # [B, Lo]
        own_len = max_len - shared
        key_pos = shared + torch.arange(own_len)  # [Lo]
        query_pos = prefix_lens[:, None] + torch.arange(E)[None, :]  # [B, E]
        # Padded query rows (e >= extend_len) see keys up to their fake position; their outputs
        # are discarded. Every row allows at least one key, so no row is all -inf.
        allowed = key_pos[None, None, :] <= query_pos[:, :, None]  # [B, E, Lo]
        G = self.group
        allowed = allowed[:, None, None].expand(B, 1, G, E, own_len).reshape(B, 1, G * E, own_len)
        mask = torch.zeros(allowed.shape, dtype=self.kv_pool.k.dtype)
        mask.masked_fill_(~allowed, float("-inf"))
        q_dest = None
        if batch.mode is ForwardMode.EXTEND and not bool((extend_lens == E).all()):
            starts = torch.repeat_interleave(torch.arange(B) * E, extend_lens)  # [T]
            firsts = torch.repeat_interleave(
                torch.cumsum(extend_lens, 0) - extend_lens, extend_lens
            )  # [T] flat index of each row's first
            q_dest = starts + torch.arange(T) - firsts
        shared_slots = kv_indices[0, :shared] if shared else None
        return AttentionMetadata(
            batch.out_cache_loc, False, shared_slots, own.reshape(-1), own_len, mask, q_dest, B, E
        )

    @staticmethod
    def _shared_prefix_len(kv_indices: torch.Tensor, prefix_lens: torch.Tensor) -> int:
        """Length of the KV prefix whose slots are identical in every row (within every
        request's cached prefix, so it never covers a token computed in this batch)."""
        if kv_indices.shape[0] < 2:
            return 0
        limit = int(prefix_lens.min())
        same = (kv_indices[:, :limit] == kv_indices[:1, :limit]).all(dim=0)  # [limit]
        shared = int(torch.cumprod(same.to(torch.int32), dim=0).sum()) if limit else 0
        return shared if shared >= MIN_SHARED_PREFIX else 0

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
            # 4-D inputs with K/V repeated per query head reach the CPU flash kernel; 3-D or
            # enable_gqa inputs fall back to the math kernel, 4x slower at 512 tokens.
            out = F.scaled_dot_product_attention(
                q.view(1, T, H, D).transpose(1, 2),  # [1, H, T, D]
                k.repeat_interleave(G, dim=1).view(1, T, H, D).transpose(1, 2),
                v.repeat_interleave(G, dim=1).view(1, T, H, D).transpose(1, 2),
                is_causal=True,
            )  # [1, H, T, D]
            return out.transpose(1, 2).reshape(T, H * D)
        B, E = meta.batch_size, meta.max_extend
        if meta.q_dest is not None:
            padded = q.new_zeros(B * E, H * D)
            padded[meta.q_dest] = q
            q = padded
        # [B*E, H*D] -> [B, E, Hkv, G, D] -> [B, Hkv, G, E, D] -> [B, Hkv, G*E, D]
        q = q.view(B, E, Hkv, G, D).permute(0, 2, 3, 1, 4).reshape(B, Hkv, G * E, D)
        k_buf, v_buf = self.kv_pool.buffers(layer)  # [S, Hkv, D] each
        own_k = k_buf.index_select(0, meta.own_slots).view(B, meta.own_len, Hkv, D)
        own_v = v_buf.index_select(0, meta.own_slots).view(B, meta.own_len, Hkv, D)
        out, lse = _flash_with_lse(q, own_k.transpose(1, 2), own_v.transpose(1, 2), meta.own_mask)
        if meta.shared_slots is not None:
            out = self._merge_shared(q, out, lse, k_buf, v_buf, meta.shared_slots)
        # [B, Hkv, G*E, D] -> [B, E, Hkv, G, D] -> [B*E, H*D]
        out = out.view(B, Hkv, G, E, D).permute(0, 3, 1, 2, 4).reshape(B * E, H * D)
        return out if meta.q_dest is None else out[meta.q_dest]

    @staticmethod
    def _merge_shared(q, own_out, own_lse, k_buf, v_buf, shared_slots):
        """Attend every query to the shared prefix at once and merge with the own part."""
        B, Hkv, R, D = q.shape  # R = G*E query rows per request and KV head
        P = shared_slots.shape[0]
        shared_k = k_buf.index_select(0, shared_slots).view(1, P, Hkv, D).transpose(1, 2)
        shared_v = v_buf.index_select(0, shared_slots).view(1, P, Hkv, D).transpose(1, 2)
        all_q = q.transpose(0, 1).reshape(1, Hkv, B * R, D)  # one problem for the whole batch
        out, lse = _flash_with_lse(all_q, shared_k, shared_v)  # [1, Hkv, B*R, D], [1, Hkv, B*R]
        out = out.view(Hkv, B, R, D).transpose(0, 1)  # [B, Hkv, R, D]
        lse = lse.view(Hkv, B, R).transpose(0, 1)  # [B, Hkv, R]
        total = torch.logaddexp(lse, own_lse)
        merged = (
            out.float() * torch.exp(lse - total)[..., None]
            + own_out.float() * torch.exp(own_lse - total)[..., None]
        )
        return merged.to(q.dtype)
