"""NativeExecutor: the native in-place kernel where the plan reads the pool in place, PyTorch's
CPU flash-attention kernel where it gathers.

In place (`Method.IN_PLACE`, kernel `runtime/kernels/decode_attention.py`): each token's queries
over its problem's slots where they lie in the pool, with no copy and no padding. Gathered passes
copy K/V out of the pool and run flash attention, which accumulates in float32 and returns the
log-sum-exp the merge needs. Grouped-query attention folds the query heads that share a KV head
into the query axis ([B, Hkv, G*E, D]), so K/V are never repeated per query head.

Without the native kernel (no compiler, or a pool dtype it does not serve) the executor plans
for `PlanTarget.GATHER` and runs every pass on flash attention, on any torch device.
"""

from __future__ import annotations

import torch

from radixgen.runtime.cache.kv_pool import KVPool
from radixgen.runtime.kernels.decode_attention import DecodeAttentionKernel
from radixgen.runtime.model.attention.executor import AttentionExecutor
from radixgen.runtime.model.attention.partials import (
    flash_with_lse,
    gather_kv,
    merge,
    merge_tokens,
)
from radixgen.runtime.model.attention.plan import (
    AttentionPlan,
    GatheredLayout,
    Method,
    PaddedLayout,
    PerProblemLayout,
    PlanTarget,
    ProblemSet,
)


class NativeExecutor(AttentionExecutor):
    def __init__(
        self,
        kv_pool: KVPool,
        num_heads: int,
        num_kv_heads: int,
        in_place_kernel: DecodeAttentionKernel | None,
    ):
        super().__init__(kv_pool, num_heads, num_kv_heads)
        self.in_place_kernel = in_place_kernel
        self.target = PlanTarget.GATHER if in_place_kernel is None else PlanTarget.IN_PLACE

    def attend(self, q, k, v, k_buf, v_buf, plan: AttentionPlan) -> torch.Tensor:
        T, Hkv, G = q.shape[0], self.num_kv_heads, self.group
        D = q.shape[1] // self.num_heads
        own = plan.own
        if own.starts is not None and own.method is not Method.PADDED:
            raise ValueError(f"a {own.method} pass cannot bound its keys from below (starts)")
        if own.method is Method.IN_PLACE:
            out, lse = self._in_place(q, k_buf, v_buf, own)
        elif own.method is Method.PER_PROBLEM:
            out, lse = self._per_problem(q.view(T, Hkv, G, D), k, v, k_buf, v_buf, own.layout)
        elif own.method is Method.PADDED:
            out, lse = self._padded(q, k_buf, v_buf, own.layout)
        else:
            raise ValueError(f"NativeExecutor cannot run a {own.method} own pass")
        if plan.shared:  # out: [T, Hkv, G, D], lse: [T, Hkv, G]
            q_tokens = q.view(T, Hkv, G, D)
            out = out.float()
            for level in plan.shared:
                if level.method is Method.IN_PLACE:
                    level_q = q_tokens if level.tokens is None else q_tokens[level.tokens]
                    level_out, level_lse = self._in_place(
                        level_q.reshape(level_q.shape[0], -1), k_buf, v_buf, level
                    )
                    out, lse = merge_tokens(out, lse, level.tokens, level_out, level_lse)
                elif level.method is Method.GATHERED:
                    out, lse = self._gathered(q_tokens, out, lse, k_buf, v_buf, level.layout)
                else:
                    raise ValueError(f"NativeExecutor cannot run a {level.method} shared pass")
        return out

    def _in_place(self, q, k_buf, v_buf, problems: ProblemSet):
        """(out [N, Hkv, G, D], lse [N, Hkv, G]) of q's rows ([N, H*D], the pass's tokens)."""
        return self.in_place_kernel(
            q, k_buf, v_buf, problems.slots, problems.limits, problems.token_problem
        )

    def _padded(self, q, k_buf, v_buf, own: PaddedLayout):
        """Flat (out [T, Hkv, G, D], lse [T, Hkv, G]) of every request's own part at once."""
        Hkv, G = self.num_kv_heads, self.group
        B, E = own.batch_size, own.max_extend
        D = q.shape[1] // self.num_heads
        if own.q_dest is not None:
            padded = q.new_zeros(B * E, q.shape[1])
            padded[own.q_dest] = q
            q = padded
        q = q.view(B, E, Hkv * G, D).transpose(1, 2)  # [B, H, E, D]
        own_k, own_v = gather_kv(k_buf, v_buf, own.slots, B)  # [B, Hkv, Lo, D] each
        # Grouped-query attention in the kernel: query head h reads KV head h // G.
        out, lse = flash_with_lse(q, own_k, own_v, own.mask)  # [B, H, E, D], [B, H, E]
        out = out.transpose(1, 2).reshape(B * E, Hkv, G, D)
        lse = lse.transpose(1, 2).reshape(B * E, Hkv, G)
        if own.q_dest is not None:
            out, lse = out[own.q_dest], lse[own.q_dest]
        return out, lse

    def _per_problem(self, q, k, v, k_buf, v_buf, own: PerProblemLayout):
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
            out, lse = flash_with_lse(q_req, k_new, v_new, is_causal=True)  # [1, H, n, *]
            if cached is not None:
                cached_k, cached_v = gather_kv(k_buf, v_buf, cached, 1)  # [1, Hkv, C, D]
                old_out, old_lse = flash_with_lse(
                    q_req.reshape(1, Hkv, G * n, D), cached_k, cached_v
                )  # [1, Hkv, G*n, *]: the same rows as [1, H, n, *]
                old_out, old_lse = old_out.reshape(out.shape), old_lse.reshape(lse.shape)
                out, lse = merge(out, lse, old_out, old_lse)
            # [1, Hkv*G, n, *] -> [n, Hkv, G, *]
            outs.append(out.reshape(Hkv, G, n, D).permute(2, 0, 1, 3))
            lses.append(lse.reshape(Hkv, G, n).permute(2, 0, 1))
            first += n
        if len(outs) == 1:
            return outs[0], lses[0]
        return torch.cat(outs), torch.cat(lses)

    def _gathered(self, q, out, lse, k_buf, v_buf, level: GatheredLayout):
        """Attend each segment's tokens to its prefix at once; merge into (out, lse).

        q: [T, Hkv, G, D]; out: [T, Hkv, G, D] float32; lse: [T, Hkv, G] float32.
        """
        Hkv, G, D = q.shape[1:]
        parts_out, parts_lse = [], []
        for tokens, slots in zip(level.tokens, level.slots, strict=True):
            group_q = q if tokens is None else q.index_select(0, tokens)
            Tg = group_q.shape[0]
            shared_k, shared_v = gather_kv(k_buf, v_buf, slots, 1)  # [1, Hkv, P, D]
            # [Tg, Hkv, G, D] -> [1, Hkv, Tg*G, D]: one problem for the whole group
            all_q = group_q.transpose(0, 1).reshape(1, Hkv, Tg * G, D)
            seg_out, seg_lse = flash_with_lse(all_q, shared_k, shared_v)
            parts_out.append(seg_out.reshape(Hkv, Tg, G, D).transpose(0, 1))  # [Tg, Hkv, G, D]
            parts_lse.append(seg_lse.reshape(Hkv, Tg, G).transpose(0, 1))  # [Tg, Hkv, G]
        if level.tokens[0] is None:  # one segment over the whole batch
            return merge(out, lse, parts_out[0], parts_lse[0])
        return merge_tokens(
            out, lse, torch.cat(level.tokens), torch.cat(parts_out), torch.cat(parts_lse)
        )
