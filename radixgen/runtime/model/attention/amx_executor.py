"""AmxExecutor: every pass of a `PlanTarget.SEGMENT` plan on the AMX segment kernel.

Each pass is the kernel's flattened problems (`SegmentProblems`), read in place from the pool,
so nothing is gathered, padded or repeated per query head: the own pass writes every token's
result, each shared level merges into it by log-sum-exp inside the kernel (`accumulate`).
"""

from __future__ import annotations

import torch

from radixgen.runtime.cache.kv_pool import KVPool
from radixgen.runtime.kernels.segment_attention import SegmentAttentionKernel
from radixgen.runtime.model.attention.plan import AttentionPlan, PlanTarget


class AmxExecutor:
    target = PlanTarget.SEGMENT

    def __init__(
        self, kv_pool: KVPool, num_heads: int, num_kv_heads: int, kernel: SegmentAttentionKernel
    ):
        self.kv_pool = kv_pool
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.kernel = kernel

    def forward(
        self,
        layer: int,
        q: torch.Tensor,  # [T, H*D]
        k: torch.Tensor,  # [T, Hkv*D]
        v: torch.Tensor,  # [T, Hkv*D]
        plan: AttentionPlan,
    ) -> torch.Tensor:  # [T, H*D]
        T = q.shape[0]
        Hkv, G = self.num_kv_heads, self.num_heads // self.num_kv_heads
        D = q.shape[1] // self.num_heads
        self.kv_pool.write(layer, plan.out_cache_loc, k.view(T, Hkv, D), v.view(T, Hkv, D))
        k_buf, v_buf = self.kv_pool.buffers(layer)  # [S, Hkv, D] each
        out = torch.empty(T, Hkv, G, D, dtype=torch.float32)
        lse = torch.empty(T, Hkv, G, dtype=torch.float32)
        self.kernel(q, k_buf, v_buf, plan.own.layout, out, lse)
        for level in plan.shared:
            self.kernel(q, k_buf, v_buf, level.layout, out, lse, accumulate=True)
        return out.to(q.dtype).view(T, Hkv * G * D)
