"""AmxExecutor: every pass of a `PlanTarget.SEGMENT` plan on the AMX segment kernel.

Each pass is the kernel's flattened problems (`SegmentProblems`), read in place from the pool,
so nothing is gathered, padded or repeated per query head: the own pass writes every token's
result, each shared level merges into it by log-sum-exp inside the kernel (`accumulate`).
"""

from __future__ import annotations

import torch

from radixgen.runtime.cache.kv_pool import KVPool
from radixgen.runtime.kernels.segment_attention import SegmentAttentionKernel
from radixgen.runtime.model.attention.executor import AttentionExecutor
from radixgen.runtime.model.attention.plan import AttentionPlan, PlanTarget


class AmxExecutor(AttentionExecutor):
    target = PlanTarget.SEGMENT

    def __init__(
        self, kv_pool: KVPool, num_heads: int, num_kv_heads: int, kernel: SegmentAttentionKernel
    ):
        super().__init__(kv_pool, num_heads, num_kv_heads)
        self.kernel = kernel

    def attend(self, q, k, v, k_buf, v_buf, plan: AttentionPlan) -> torch.Tensor:
        T, D = q.shape[0], q.shape[1] // self.num_heads
        out = torch.empty(T, self.num_kv_heads, self.group, D, dtype=torch.float32)
        lse = torch.empty(T, self.num_kv_heads, self.group, dtype=torch.float32)
        self.kernel(q, k_buf, v_buf, plan.own.layout, out, lse)
        for level in plan.shared:
            self.kernel(q, k_buf, v_buf, level.layout, out, lse, accumulate=True)
        return out
