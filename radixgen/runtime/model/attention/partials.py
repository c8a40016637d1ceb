"""Attention over a subset of keys, as (output, log-sum-exp) partials, and their merge.

Two results over disjoint key sets combine exactly by their log-sum-exp: with m = logaddexp(a, b),
out = out_a * exp(a - m) + out_b * exp(b - m). Every executor builds a layer's attention from
such partials: the own pass, then each shared level merged in.
"""

from __future__ import annotations

import torch


def flash_with_lse(q, k, v, mask=None, is_causal=False):
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


def gather_kv(k_buf, v_buf, slots: torch.Tensor, rows: int):
    """K and V of `slots` ([rows * L]) from one layer's pool buffers, each [rows, Hkv, L, D]."""
    Hkv, D = k_buf.shape[1:]
    k = k_buf.index_select(0, slots).view(rows, -1, Hkv, D).transpose(1, 2)
    v = v_buf.index_select(0, slots).view(rows, -1, Hkv, D).transpose(1, 2)
    return k, v


def merge(out_a, lse_a, out_b, lse_b):
    """Combine two attention results over disjoint key sets by their log-sum-exp (float32)."""
    total = torch.logaddexp(lse_a, lse_b)
    out = (
        out_a.float() * torch.exp(lse_a - total)[..., None]
        + out_b.float() * torch.exp(lse_b - total)[..., None]
    )
    return out, total


def merge_tokens(out, lse, tokens: torch.Tensor | None, part_out, part_lse):
    """Merge a result over other keys for `tokens` ([Tl]; None: every token) into (out, lse)."""
    if tokens is None:
        return merge(out, lse, part_out, part_lse)
    merged_out, merged_lse = merge(
        out.index_select(0, tokens), lse.index_select(0, tokens), part_out, part_lse
    )
    return out.index_copy(0, tokens, merged_out), lse.index_copy(0, tokens, merged_lse)
