"""Llama-family decoder (Llama 2/3, Mistral, SmolLM2, TinyLlama; Qwen2 via q/k/v biases).

The model works on the flat token layout of `ForwardBatch`: hidden states are [T, hidden], with
no batch or padding axis; attention finds each request's KV through the attention plan.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from radixgen.runtime.config import ModelConfig
from radixgen.runtime.kernels.bf16_block_matmul import Bf16Int8Panels
from radixgen.runtime.kernels.block_matmul import Int8Blocks, Int8Panels
from radixgen.runtime.kernels.elementwise import FusedOps
from radixgen.runtime.kernels.engine_kernels import EngineKernels
from radixgen.runtime.kernels.int4 import Int4Groups, Int4Matmul
from radixgen.runtime.kernels.int8 import Int8Matmul
from radixgen.runtime.model.attention import AttentionExecutor, AttentionPlan
from radixgen.runtime.model.layers import (
    Linear,
    MergedLinear,
    RMSNorm,
    RotaryEmbedding,
    can_prepack,
    packed_linear,
    prepack_weight,
    rope_inv_freq,
)


class LlamaAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int, ops: FusedOps):
        super().__init__()
        self.layer_id = layer_id
        self.ops = ops
        self.num_heads, self.num_kv_heads = config.num_heads, config.num_kv_heads
        self.head_dim = config.head_dim
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.qkv_proj = MergedLinear(
            config.hidden_size, [q_size, kv_size, kv_size], config.attention_bias
        )
        self.o_proj = Linear(q_size, config.hidden_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,  # [T, hidden]
        rope: tuple[torch.Tensor, torch.Tensor],
        attn: AttentionExecutor,
        plan: AttentionPlan,  # this batch's, built once by the planner
    ) -> torch.Tensor:
        T = x.shape[0]
        H, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = self.qkv_proj(x)  # [T, (H + 2*Hkv) * D]
        # q and k are adjacent columns: rotate them in place as one [T, H + Hkv, D] tensor
        self.ops.rotary_(qkv[:, : (H + Hkv) * D].view(T, H + Hkv, D), *rope)
        q = qkv[:, : H * D]  # [T, H * D], column slices of qkv
        k = qkv[:, H * D : (H + Hkv) * D]  # [T, Hkv * D]
        v = qkv[:, (H + Hkv) * D :]  # [T, Hkv * D]
        out = attn.forward(self.layer_id, q, k, v, plan)
        return self.o_proj(out)


class LlamaMLP(nn.Module):
    def __init__(self, config: ModelConfig, ops: FusedOps):
        super().__init__()
        self.ops = ops
        size = config.intermediate_size
        self.gate_up_proj = MergedLinear(config.hidden_size, [size, size], bias=False)
        self.down_proj = Linear(size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.ops.silu_mul(self.gate_up_proj(x)))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int, ops: FusedOps):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)
        self.self_attn = LlamaAttention(config, layer_id, ops)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)
        self.mlp = LlamaMLP(config, ops)

    def forward(
        self,
        x: torch.Tensor,  # [T, hidden]: the residual stream before this layer's attention
        residual: torch.Tensor | None,  # [T, hidden]: added to x first (None: x is the stream)
        rope: tuple[torch.Tensor, torch.Tensor],
        attn: AttentionExecutor,
        plan: AttentionPlan,  # this batch's, built once by the planner
    ) -> tuple[torch.Tensor, torch.Tensor]:  # the MLP's output, the stream it adds to
        """One layer; the residual adds are deferred into the next RMSNorm (one fused pass)."""
        if residual is None:
            residual, normed = x, self.input_layernorm(x)
        else:
            normed, residual = self.input_layernorm.add_and_norm(x, residual)
        attended = self.self_attn(normed, rope, attn, plan)
        normed, residual = self.post_attention_layernorm.add_and_norm(residual, attended)
        return self.mlp(normed), residual


# HF weight name suffix -> (our parameter path suffix, shard index) for merged projections.
_MERGED = {
    "self_attn.q_proj": ("self_attn.qkv_proj", 0),
    "self_attn.k_proj": ("self_attn.qkv_proj", 1),
    "self_attn.v_proj": ("self_attn.qkv_proj", 2),
    "mlp.gate_proj": ("mlp.gate_up_proj", 0),
    "mlp.up_proj": ("mlp.gate_up_proj", 1),
}


class LlamaForCausalLM(nn.Module):
    def __init__(self, config: ModelConfig, max_positions: int, kernels: EngineKernels):
        """`kernels`: the engine's choice; its element-wise ops serve every layer, its
        quantized matmuls the projections that `use_int4` / `use_int8_head` switch."""
        super().__init__()
        self.config = config
        ops = kernels.elementwise
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config, i, ops) for i in range(config.num_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)
        self.rotary = RotaryEmbedding(config, max_positions)
        self.lm_head = None
        if not config.tie_word_embeddings:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.packed_tied_head: torch.Tensor | None = None
        self.int8_head: Int8Panels | Bf16Int8Panels | None = None  # Q8_0 codes (use_int8_head)
        self.int8_head_max_tokens = 0
        self.int8_matmul: Int8Matmul | None = None

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,  # [T]
        positions: torch.Tensor,  # [T]
        attn: AttentionExecutor,
        plan: AttentionPlan,  # this batch's, built once by the planner
        logit_rows: torch.Tensor,  # [R]
        input_embeds: torch.Tensor | None = None,  # [T, hidden]: instead of looking up input_ids
    ) -> torch.Tensor:  # [R, vocab] float32
        x = self.embed_tokens(input_ids) if input_embeds is None else input_embeds  # [T, hidden]
        rope = self.rotary.lookup(positions, x.dtype)
        residual = None
        for layer in self.layers:
            x, residual = layer(x, residual, rope, attn, plan)
        x, _ = self.norm.add_and_norm(x[logit_rows], residual[logit_rows])  # [R, hidden]
        return self.logits(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # [R, hidden] normed -> [R, vocab] f32
        """The output head: its 8-bit blocks for narrow passes, else the dense (or prepacked)
        head, or the embedding matrix when they are tied."""
        if self.int8_head is not None and x.shape[0] <= self.int8_head_max_tokens:
            return self.int8_matmul(x, self.int8_head)
        if self.lm_head is not None:
            return self.lm_head(x).float()
        if self.packed_tied_head is not None:
            return packed_linear(x, self.packed_tied_head, None).float()
        return F.linear(x, self.embed_tokens.weight).float()  # tied: the head is the embedding

    def prepack(self) -> None:
        """Switch every projection (and the tied head) to prepacked kernels where supported."""
        for module in self.modules():
            if isinstance(module, Linear):
                module.prepack()
        if self.lm_head is None and can_prepack(self.embed_tokens.weight):
            self.packed_tied_head = prepack_weight(self.embed_tokens.weight)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors into the (merged) parameters; raise if any parameter is missed."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        rope_freqs = None
        for name, tensor in weights:
            if name == "rope_freqs":
                rope_freqs = tensor
                continue
            name = name.removeprefix("model.")
            if name.startswith("lm_head") and self.lm_head is None:
                continue  # tied embeddings: the head is the embedding matrix
            is_bias = name.endswith(".bias")
            module_name, shard = _module_of(name)
            if shard is None:
                params[name].data.copy_(tensor)
                loaded.add(name)
                continue
            self.get_submodule(module_name).load_shard(shard, tensor, is_bias)
            loaded.add(f"{module_name}.{'bias' if is_bias else 'weight'}")
        missing = set(params) - loaded
        if missing:
            raise ValueError(f"checkpoint is missing weights: {sorted(missing)[:5]} ...")
        if rope_freqs is not None:  # llama3-style per-frequency factors stored in GGUF
            self.rotary.set_inv_freq(rope_inv_freq(self.config) / rope_freqs.float())

    def use_int4(
        self, weights: Iterable[tuple[str, Int4Groups]], max_tokens: int, matmul: Int4Matmul
    ) -> int:
        """Give every projection whose whole weight is among `weights` (HF names, 4-bit groups)
        the 4-bit `matmul` for inputs of at most `max_tokens` rows; returns how many switched."""
        shards: dict[str, dict[int, Int4Groups]] = defaultdict(dict)
        for name, groups in weights:
            module_name, shard = _module_of(name.removeprefix("model."))
            shards[module_name][shard or 0] = groups
        switched = 0
        for module_name, parts in shards.items():
            try:
                module = self.get_submodule(module_name)
            except AttributeError:
                continue  # the head of a model with tied embeddings
            if not isinstance(module, Linear):
                continue  # the embedding
            count = len(module.shard_sizes) if isinstance(module, MergedLinear) else 1
            if len(parts) == count:
                module.use_int4([parts[i] for i in range(count)], max_tokens, matmul)
                switched += 1
        return switched

    def use_int8_head(
        self,
        weights: Iterable[tuple[str, Int8Blocks]],
        max_tokens: int,
        matmul: Int8Matmul,
    ) -> bool:
        """Multiply passes of at most `max_tokens` rows by the output head's 8-bit blocks, if
        `weights` (HF names) hold them: the tied embedding or `lm_head`. `matmul` serves the
        model's activation dtype; returns whether the head switched."""
        name = "model.embed_tokens.weight" if self.lm_head is None else "lm_head.weight"
        blocks = next((blocks for n, blocks in weights if n == name), None)
        if blocks is None:
            return False
        if tuple(blocks.codes.shape) != (self.config.vocab_size, self.config.hidden_size):
            raise ValueError(f"8-bit head {tuple(blocks.codes.shape)} does not fit the model")
        self.int8_head, self.int8_head_max_tokens = matmul.pack(blocks), max_tokens
        self.int8_matmul = matmul
        return True


def _module_of(name: str) -> tuple[str, int | None]:
    """(module path, shard index or None) of an HF parameter name without its "model." prefix:
    q/k/v and gate/up land in shards of our merged projections."""
    module_path = name.rsplit(".", 1)[0]
    merged = next((m for m in _MERGED if module_path.endswith(m)), None)
    if merged is None:
        return module_path, None
    target, shard = _MERGED[merged]
    return module_path[: -len(merged)] + target, shard
