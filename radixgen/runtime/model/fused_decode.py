"""FusedDecode: a Llama-family model's narrow forward passes as one native call.

A decode step of a small model is mostly Python dispatch between tiny kernels (docs/kernels.md).
Where every projection multiplies by its 4-bit weights and attention reads the pool in place,
`forward` hands the whole pass (all layers, then the final norm) to `DecodeStepKernel` and keeps
only the embedding lookup and the output head in PyTorch. The kernel calls the per-operation
path's own kernels with its roundings, so logits are bit-identical to `LlamaForCausalLM.forward`
(tests/engine/test_fused_decode.py); `EngineConfig.disable_fused_decode` turns it off.

It serves a pass when the plan is one in-place pass with no shared levels (decode steps and the
verify passes of speculative decoding without a shared prefix) of at most as many tokens as the
4-bit weights serve; any other pass runs operation by operation.
"""

from __future__ import annotations

import torch

from radixgen.runtime.cache.kv_pool import KVPool
from radixgen.runtime.kernels.bf16_block_matmul import Bf16Int4Panels
from radixgen.runtime.kernels.block_matmul import Int4Panels
from radixgen.runtime.kernels.decode_step import DecodeStepKernel, LayerTable, LayerWeights
from radixgen.runtime.model.attention import AttentionPlan
from radixgen.runtime.model.attention.plan import Method
from radixgen.runtime.model.batch import ForwardBatch
from radixgen.runtime.model.layers import Linear
from radixgen.runtime.model.llama import LlamaForCausalLM


class FusedDecode:
    def __init__(
        self, model: LlamaForCausalLM, kernel: DecodeStepKernel, kv_pool: KVPool, max_tokens: int
    ):
        self.model, self.kernel, self.kv_pool = model, kernel, kv_pool
        self.max_tokens = max_tokens  # the widest pass every projection multiplies in 4 bits
        self.table = LayerTable([_layer_weights(layer) for layer in model.layers])
        self.passes = 0  # passes run fused (tests and benchmarks read it)

    @staticmethod
    def build(
        model: LlamaForCausalLM, kernel: DecodeStepKernel | None, kv_pool: KVPool
    ) -> FusedDecode | None:
        """The fused path for `model`, or None where it cannot serve: another family than the
        plain Llama layer, no kernel for the model's dtype, a KV pool of another dtype, or a
        projection without native 4-bit weights."""
        if type(model) is not LlamaForCausalLM:
            return None  # the C step is the Llama layer: no QK-norm, windows or Gemma norms
        dtype = model.embed_tokens.weight.dtype
        if kernel is None or not kernel.available(dtype) or kv_pool.k.dtype != dtype:
            return None
        wanted = Bf16Int4Panels if dtype == torch.bfloat16 else Int4Panels
        projections = [m for m in model.layers.modules() if isinstance(m, Linear)]
        if not all(isinstance(p.int4, wanted) for p in projections):
            return None
        max_tokens = min(p.int4_max_tokens for p in projections)
        return FusedDecode(model, kernel, kv_pool, max_tokens)

    def serves(self, batch: ForwardBatch, plan: object) -> bool:
        return (
            isinstance(plan, AttentionPlan)
            and not plan.shared
            and plan.own.method is Method.IN_PLACE
            and plan.own.tokens is None
            and batch.num_tokens <= self.max_tokens
        )

    @torch.inference_mode()
    def forward(self, batch: ForwardBatch, plan: AttentionPlan) -> torch.Tensor:
        """Logits [R, vocab] float32 of `batch.logit_rows`, as the model's forward gives them."""
        model, config = self.model, self.model.config
        self.passes += 1
        x = model.embed_tokens(batch.input_ids)  # [T, hidden]
        cos, sin = model.rotary.lookup(batch.positions, x.dtype)  # [T, 1, D] each
        own = plan.own
        normed = self.kernel(
            self.table,
            x,
            cos.squeeze(1),
            sin.squeeze(1),
            self.kv_pool.k,
            self.kv_pool.v,
            plan.out_cache_loc,
            own.slots.contiguous(),
            own.limits.contiguous(),
            None if own.token_problem is None else own.token_problem.contiguous(),
            model.norm.weight,
            config.num_heads,
            config.intermediate_size,
            config.rms_norm_eps,
        )  # [T, hidden]
        return model.logits(normed[batch.logit_rows])


def _layer_weights(layer) -> LayerWeights:
    attention, mlp = layer.self_attn, layer.mlp
    return LayerWeights(
        qkv=attention.qkv_proj.int4,
        qkv_bias=attention.qkv_proj.bias,
        o=attention.o_proj.int4,
        gate_up=mlp.gate_up_proj.int4,
        down=mlp.down_proj.int4,
        input_norm=layer.input_layernorm.weight,
        post_attention_norm=layer.post_attention_layernorm.weight,
    )
