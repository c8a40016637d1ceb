"""Building blocks of a Llama-family decoder: RMSNorm, rotary embedding, fused projections."""

from __future__ import annotations

import math

import torch
from torch import nn

from radixgen.runtime.config import ModelConfig, cpu_has_fast_bfloat16
from radixgen.runtime.kernels.block_matmul import Int4Panels
from radixgen.runtime.kernels.elementwise import FusedOps
from radixgen.runtime.kernels.int4 import Int4Groups, Int4Matmul, PackedInt4


class RMSNorm(nn.Module):
    """transformers' LlamaRMSNorm (normalise in float32, scale in the input's dtype), fused with
    the residual add before it where the model asks (`add_and_norm`), on `ops`."""

    def __init__(self, size: int, eps: float, ops: FusedOps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps
        self.ops = ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, hidden]
        return self.ops.add_rms_norm(x, None, self.weight, self.eps)[0]

    def add_and_norm(
        self, x: torch.Tensor, delta: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:  # normed, x + delta; each [T, hidden]
        """Norm of the residual stream after adding `delta`, and the new stream itself."""
        return self.ops.add_rms_norm(x, delta, self.weight, self.eps)


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    """Inverse frequencies [D/2] with the model's rope scaling applied (none, linear, llama3)."""
    dim = config.head_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    inv_freq = 1.0 / (config.rope_theta**exponents)
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / float(scaling["factor"])
    if kind == "llama3":
        factor = float(scaling["factor"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_ctx = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_ctx / low, inv_freq / factor, inv_freq)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = (wavelen >= old_ctx / high) & (wavelen <= old_ctx / low)
        return torch.where(is_medium, smoothed, scaled)
    raise ValueError(f"unsupported rope_scaling type {kind!r}")


class RotaryEmbedding(nn.Module):
    """Rotate-half rotary embedding with cos/sin tables precomputed for every position."""

    def __init__(self, config: ModelConfig, max_positions: int):
        super().__init__()
        self.max_positions = max_positions
        self.set_inv_freq(rope_inv_freq(config))

    def set_inv_freq(self, inv_freq: torch.Tensor) -> None:
        """(Re)build the tables from inverse frequencies [D/2]."""
        positions = torch.arange(self.max_positions, dtype=torch.float32)
        freqs = positions[:, None] * inv_freq[None, :]  # [P, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [P, D]
        self.register_buffer("cos_table", emb.cos(), persistent=False)
        self.register_buffer("sin_table", emb.sin(), persistent=False)

    def lookup(self, positions: torch.Tensor, dtype: torch.dtype):
        """cos, sin for `positions` ([T]) -> each [T, 1, D], computed once per batch."""
        return (
            self.cos_table[positions].to(dtype)[:, None, :],
            self.sin_table[positions].to(dtype)[:, None, :],
        )


def can_prepack(weight: torch.Tensor) -> bool:
    """oneDNN prepacking applies on CPU to float32 weights, and to bfloat16 ones where oneDNN
    computes in bfloat16 (AVX-512 or newer; elsewhere it refuses to pack them)."""
    if weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return weight.dtype == torch.float32 or (
        weight.dtype == torch.bfloat16 and cpu_has_fast_bfloat16()
    )


# oneDNN picks the packed layout for this many input rows; the packed weight serves every batch
# size. A hint of 64 beat a hint of 1 at every width measured but one-row float32 (the 4-bit
# kernels serve those passes anyway); measurements in docs/tuning.md.
PREPACK_ROWS_HINT = 64


def prepack_weight(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PREPACK_ROWS_HINT)


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None):
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


class Linear(nn.Linear):
    """nn.Linear that can switch to faster CPU kernels.

    `prepack()`: oneDNN's prepacked kernel. In bfloat16, without bias, results are
    bit-identical to `F.linear` (with bias, the fused kernel rounds once instead of twice);
    one-row matmuls (decoding) run about 2x faster. In float32 it sums in another order
    (results agree to float32 rounding) and beats MKL's GEMM on AVX2 CPUs, 2x at 8 rows.
    Prepacking replaces the dense weight, so weights are not held twice.

    `use_int4(parts, max_tokens, matmul)`: inputs of at most `max_tokens` rows multiply by the
    checkpoint's 4-bit groups instead (`parts`: one `Int4Groups` per shard, in output order),
    through `matmul` (the engine's `Int4Matmul`), reading a quarter of the bytes of bfloat16 (an
    eighth of float32); wider inputs keep the dense weight.
    """

    packed: torch.Tensor | None = None
    int4: PackedInt4 | Int4Panels | None = None
    int4_max_tokens: int = 0
    int4_matmul: Int4Matmul | None = None

    def prepack(self) -> None:
        if self.packed is None and can_prepack(self.weight):
            self.packed = prepack_weight(self.weight)
            self.weight = nn.Parameter(torch.empty(0, dtype=self.weight.dtype), requires_grad=False)

    def use_int4(self, parts: list[Int4Groups], max_tokens: int, matmul: Int4Matmul) -> None:
        groups = Int4Groups.cat(parts)
        if tuple(groups.codes.shape) != (self.out_features, self.in_features):
            raise ValueError(
                f"4-bit weight {tuple(groups.codes.shape)} does not fit a "
                f"{self.out_features}x{self.in_features} projection"
            )
        self.int4 = matmul.pack(groups)
        self.int4_max_tokens, self.int4_matmul = max_tokens, matmul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.int4 is not None and x.shape[0] <= self.int4_max_tokens:
            out = self.int4_matmul(x, self.int4)
            return out if self.bias is None else out + self.bias
        if self.packed is None:
            return super().forward(x)
        return packed_linear(x, self.packed, self.bias)


class MergedLinear(Linear):
    """A linear layer whose output rows are several projections stacked (q|k|v or gate|up).

    `load_shard(index, weight)` copies one projection's weight (or bias) into its rows.
    """

    def __init__(self, in_features: int, shard_sizes: list[int], bias: bool):
        super().__init__(in_features, sum(shard_sizes), bias=bias)
        self.shard_offsets = [sum(shard_sizes[:i]) for i in range(len(shard_sizes))]
        self.shard_sizes = shard_sizes

    def load_shard(self, index: int, tensor: torch.Tensor, is_bias: bool = False) -> None:
        target = self.bias if is_bias else self.weight
        start = self.shard_offsets[index]
        target.data[start : start + self.shard_sizes[index]].copy_(tensor)
