"""Attention over the token-granular KV pool: one planner, several executors.

`AttentionPlanner.plan(batch)` turns a batch into one `AttentionPlan` per forward pass (query
tokens x KV slots, causal limits, the shared-prefix levels and their log-sum-exp merge); each
layer hands it to an executor, which stores the layer's new K/V and attends as planned:

    ReferenceExecutor   plain PyTorch, any plan, any device (tests, debugging)
    NativeExecutor      the native in-place kernel + PyTorch's flash attention (the default)
    AmxExecutor         the AMX segment kernel (bfloat16 on CPUs with AMX)
"""

from radixgen.runtime.model.attention.amx_executor import AmxExecutor
from radixgen.runtime.model.attention.executor import AttentionExecutor
from radixgen.runtime.model.attention.native_executor import NativeExecutor
from radixgen.runtime.model.attention.plan import AttentionPlan, PlanTarget
from radixgen.runtime.model.attention.planner import AttentionPlanner
from radixgen.runtime.model.attention.reference_executor import ReferenceExecutor

__all__ = [
    "AmxExecutor",
    "AttentionExecutor",
    "AttentionPlan",
    "AttentionPlanner",
    "NativeExecutor",
    "PlanTarget",
    "ReferenceExecutor",
]
