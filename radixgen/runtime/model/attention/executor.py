"""AttentionExecutor: what every executor shares, and the one method each one writes.

Per layer, `forward` stores the layer's new K/V in the pool at the plan's slots, then hands the
queries and the pool's buffers to `attend`, which computes the plan's attention (once per part
of a `SplitPlan`, on that part's tokens). The model only ever calls `forward`.
"""

from __future__ import annotations

import torch

from radixgen.runtime.cache.kv_pool import KVPool
from radixgen.runtime.model.attention.plan import AttentionPlan, PlanTarget, SplitPlan


class AttentionExecutor:
    target: PlanTarget  # the plans it runs (the planner builds for this target)

    def __init__(self, kv_pool: KVPool, num_heads: int, num_kv_heads: int):
        self.kv_pool = kv_pool
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.group = num_heads // num_kv_heads  # G query heads per KV head

    def forward(
        self,
        layer: int,
        q: torch.Tensor,  # [T, H*D]
        k: torch.Tensor,  # [T, Hkv*D]
        v: torch.Tensor,  # [T, Hkv*D]
        plan: AttentionPlan | SplitPlan,
    ) -> torch.Tensor:  # [T, H*D]
        T = q.shape[0]
        D = q.shape[1] // self.num_heads
        k = k.view(T, self.num_kv_heads, D)
        v = v.view(T, self.num_kv_heads, D)
        self.kv_pool.write(layer, plan.out_cache_loc, k, v)
        k_buf, v_buf = self.kv_pool.buffers(layer)  # [S, Hkv, D] each
        if isinstance(plan, AttentionPlan):
            return self.attend(q, k, v, k_buf, v_buf, plan).to(q.dtype).reshape(T, -1)
        out = torch.empty_like(q)
        for tokens, part in plan.parts:
            attended = self.attend(q[tokens], k[tokens], v[tokens], k_buf, v_buf, part)
            out[tokens] = attended.to(q.dtype).reshape(tokens.shape[0], -1)
        return out

    def attend(
        self,
        q: torch.Tensor,  # [T, H*D]
        k: torch.Tensor,  # [T, Hkv, D] this batch's new keys (already in the pool)
        v: torch.Tensor,  # [T, Hkv, D]
        k_buf: torch.Tensor,  # [S, Hkv, D] the layer's pool, new K/V included
        v_buf: torch.Tensor,  # [S, Hkv, D]
        plan: AttentionPlan,
    ) -> torch.Tensor:  # [T, Hkv, G, D] (any float dtype; forward casts to q's)
        raise NotImplementedError
