"""Gemma 3 text decoder (and Qwen3, which shares its QK-norm): sliding-window and global layers.

Where Gemma 3 differs from the Llama family (`llama.py`):

- RMSNorm scales by (1 + w), computed in float32 and cast once (`GemmaRMSNorm`); the weights
  are Hugging Face's w (the GGUF loader removes the +1 llama.cpp folds in);
- queries and keys are RMS-normalised per head before the rotary embedding (QK-norm);
- each layer norms its attention output and its MLP output before adding them to the stream
  (post-attention and post-feed-forward norms), and norms the MLP input (pre-feed-forward);
- the MLP gates with GELU (tanh approximation); the embeddings are scaled by sqrt(hidden);
- layers are "sliding_attention" (the last `sliding_window` positions, rope base
  `rope_local_theta`) or "full_attention": the runner passes `LayerPlans`, one plan per kind.

Qwen3 is a Llama-family decoder with QK-norm (plain RMSNorm, no extra norms): `Qwen3ForCausalLM`
runs it on the same attention module.

Same flat token layout as `llama.py`: hidden states are [T, hidden].
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from radixgen.runtime.config import ModelConfig
from radixgen.runtime.kernels.elementwise import FusedOps
from radixgen.runtime.kernels.engine_kernels import EngineKernels
from radixgen.runtime.model.attention import AttentionExecutor, AttentionPlan
from radixgen.runtime.model.attention.plan import LayerPlans, SplitPlan
from radixgen.runtime.model.layers import (
    Linear,
    MergedLinear,
    RMSNorm,
    RotaryEmbedding,
    rope_inv_freq,
)
from radixgen.runtime.model.llama import LlamaDecoderLayer, LlamaForCausalLM

Plans = AttentionPlan | SplitPlan | LayerPlans


class GemmaRMSNorm(nn.Module):
    """transformers' Gemma3RMSNorm: x / rms(x) * (1 + w), all in float32, cast at the end."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., size]
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * (1.0 + self.weight.float())).to(x.dtype)


class QKNormAttention(nn.Module):
    """Attention with per-head RMS norms of q and k before the rotary embedding (Gemma 3,
    Qwen3). `norm` builds the norm of one head's dim; `scale` is query_pre_attn_scalar^-1/2
    relative to the executors' head_dim^-1/2 (1.0 when they agree)."""

    def __init__(self, config: ModelConfig, layer_id: int, ops: FusedOps, norm):
        super().__init__()
        self.layer_id = layer_id
        self.ops = ops
        self.num_heads, self.num_kv_heads = config.num_heads, config.num_kv_heads
        self.head_dim = D = config.head_dim
        q_size, kv_size = self.num_heads * D, self.num_kv_heads * D
        self.qkv_proj = MergedLinear(
            config.hidden_size, [q_size, kv_size, kv_size], config.attention_bias
        )
        self.o_proj = Linear(q_size, config.hidden_size, bias=False)
        self.q_norm = norm(D)
        self.k_norm = norm(D)
        scalar = config.query_pre_attn_scalar or D
        self.q_scale = 1.0 if scalar == D else (D / scalar) ** 0.5

    def forward(
        self,
        x: torch.Tensor,  # [T, hidden]
        rope: tuple[torch.Tensor, torch.Tensor],
        attn: AttentionExecutor,
        plan: AttentionPlan | SplitPlan,
    ) -> torch.Tensor:  # [T, hidden]
        T = x.shape[0]
        H, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = self.qkv_proj(x)  # [T, (H + 2*Hkv) * D]
        # each head's row normed on its own: [T * heads, D]
        q = self.q_norm(qkv[:, : H * D].reshape(T * H, D)).view(T, H, D)
        k = self.k_norm(qkv[:, H * D : (H + Hkv) * D].reshape(T * Hkv, D)).view(T, Hkv, D)
        qk = torch.cat((q, k), dim=1)  # [T, H + Hkv, D], contiguous for the in-place rotation
        self.ops.rotary_(qk, *rope)
        q = qk[:, :H].reshape(T, H * D)
        if self.q_scale != 1.0:
            q = q * self.q_scale
        k = qk[:, H:].reshape(T, Hkv * D)
        v = qkv[:, (H + Hkv) * D :]  # [T, Hkv * D]
        return self.o_proj(attn.forward(self.layer_id, q, k, v, plan))


class GemmaMLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        size = config.intermediate_size
        self.gate_up_proj = MergedLinear(config.hidden_size, [size, size], bias=False)
        self.down_proj = Linear(size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, hidden]
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # [T, I] each
        return self.down_proj(F.gelu(gate, approximate="tanh") * up)


def _layer_plan(plans: Plans, window: int | None) -> AttentionPlan | SplitPlan:
    """The plan of a layer with `window` (None: global) among the forward pass's plans."""
    if not isinstance(plans, LayerPlans):
        if window is not None:
            raise ValueError("a sliding-window layer needs LayerPlans")
        return plans
    if window is None:
        return plans.full
    if window != plans.window:
        raise ValueError(f"no plan for a window of {window} (have {plans.window})")
    return plans.local


class Gemma3DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int, ops: FusedOps):
        super().__init__()
        self.window = config.layer_window(layer_id)

        def norm(size: int) -> GemmaRMSNorm:
            return GemmaRMSNorm(size, config.rms_norm_eps)

        self.input_layernorm = norm(config.hidden_size)
        self.self_attn = QKNormAttention(config, layer_id, ops, norm)
        self.post_attention_layernorm = norm(config.hidden_size)
        self.pre_feedforward_layernorm = norm(config.hidden_size)
        self.mlp = GemmaMLP(config)
        self.post_feedforward_layernorm = norm(config.hidden_size)

    def forward(
        self,
        x: torch.Tensor,  # [T, hidden] the residual stream
        ropes: dict[int | None, tuple[torch.Tensor, torch.Tensor]],  # by window
        attn: AttentionExecutor,
        plans: Plans,
    ) -> torch.Tensor:  # [T, hidden] the stream after this layer
        rope = ropes[self.window]
        attended = self.self_attn(
            self.input_layernorm(x), rope, attn, _layer_plan(plans, self.window)
        )
        x = x + self.post_attention_layernorm(attended)
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Gemma3ForCausalLM(LlamaForCausalLM):
    """Gemma 3's text decoder. The output head, prepacking, quantized-weight switches and
    `load_weights` are the Llama family's (same Hugging Face names, merged q/k/v and
    gate/up); the layers, norms, embedding scale and rope tables are Gemma's."""

    def __init__(self, config: ModelConfig, max_positions: int, kernels: EngineKernels):
        nn.Module.__init__(self)
        self.config = config
        ops = kernels.elementwise
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            Gemma3DecoderLayer(config, i, ops) for i in range(config.num_layers)
        )
        self.norm = GemmaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = RotaryEmbedding(config, max_positions)  # global layers
        self.rotary_local = RotaryEmbedding(_local_rope_config(config), max_positions)
        self.lm_head = None
        if not config.tie_word_embeddings:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.packed_tied_head = None
        self.int8_head = None
        self.int8_head_max_tokens = 0
        self.int8_matmul = None

    def reset_rope(self) -> None:
        """(Re)compute the rope tables (after the model was built on the meta device)."""
        self.rotary.set_inv_freq(rope_inv_freq(self.config))
        self.rotary_local.set_inv_freq(rope_inv_freq(_local_rope_config(self.config)))

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,  # [T]
        positions: torch.Tensor,  # [T]
        attn: AttentionExecutor,
        plan: Plans,  # this batch's (LayerPlans when the model has sliding layers)
        logit_rows: torch.Tensor,  # [R]
    ) -> torch.Tensor:  # [R, vocab] float32
        x = self.embed_tokens(input_ids)  # [T, hidden]
        x = x * torch.tensor(self.config.hidden_size**0.5).to(x.dtype)
        ropes = {None: self.rotary.lookup(positions, x.dtype)}
        if self.config.sliding_window is not None:
            ropes[self.config.sliding_window] = self.rotary_local.lookup(positions, x.dtype)
        for layer in self.layers:
            x = layer(x, ropes, attn, plan)
        return self.logits(self.norm(x[logit_rows]))  # [R, vocab]


def _local_rope_config(config: ModelConfig) -> ModelConfig:
    """The config whose rope is the sliding layers' (their own base, no scaling)."""
    if config.rope_local_theta is None:
        return config
    return dataclasses.replace(config, rope_theta=config.rope_local_theta, rope_scaling=None)


class Qwen3DecoderLayer(LlamaDecoderLayer):
    """A Llama layer (same norms, MLP and deferred residual adds) whose attention norms q and k
    per head (plain RMSNorm)."""

    def __init__(self, config: ModelConfig, layer_id: int, ops: FusedOps):
        super().__init__(config, layer_id, ops)

        def norm(size: int) -> RMSNorm:
            return RMSNorm(size, config.rms_norm_eps, ops)

        self.self_attn = QKNormAttention(config, layer_id, ops, norm)


class Qwen3ForCausalLM(LlamaForCausalLM):
    """Qwen3: the Llama family's model with QK-norm layers."""

    def __init__(self, config: ModelConfig, max_positions: int, kernels: EngineKernels):
        super().__init__(config, max_positions, kernels)
        ops = kernels.elementwise
        self.layers = nn.ModuleList(
            Qwen3DecoderLayer(config, i, ops) for i in range(config.num_layers)
        )
