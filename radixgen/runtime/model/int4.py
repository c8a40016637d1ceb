"""4-bit grouped weights for small batches: the checkpoint's own Q4 blocks, multiplied directly.

Decoding a few tokens is bound by reading the weights. A GGUF file in Q4_0 or Q4_1 stores each
run of 32 inputs of an output row as 4-bit codes with a scale (and, Q4_1, an offset), so keeping
those codes instead of the dequantized matrix reads a quarter of the bytes of bfloat16 (an
eighth of float32). Both kernels multiply by exactly this form,

    w[n, k] = (codes[n, k] - 8) * scales[n, k // 32] + zeros[n, k // 32]

so the weights are the file's own values, not a second quantization: PyTorch's CPU kernel
`_weight_int4pack_mm_for_cpu` for bfloat16 activations (scales and zeros rounded to bfloat16),
radixgen's native kernel (`block_matmul.py`) for float32 ones. Wide batches (prefill) stay on
the dense GEMM, which is faster there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from radixgen.runtime.model.block_matmul import GROUP_SIZE, Int4Panels, load_block_matmul

# Widest pass (tokens) that the 4-bit kernel of each activation dtype runs faster than the dense
# GEMM, measured on 2 cores with SmolLM2's 30 layers of projections streaming from memory:
# PyTorch's bfloat16 kernel against oneDNN's AMX GEMM on a Xeon (2026-12-01); the native float32
# kernel against oneDNN's prepacked float32 GEMM on an AVX2 EPYC (2026-12-03, per layer: 0.34 vs
# 0.88 ms at 1 row, 1.04 vs 1.46 at 12, 3.24 vs 4.52 at 48, 6.0 vs 6.4 at 96, 7.4 vs 8.2 at 128,
# 9.0 vs 9.5 at 160).
DEFAULT_MAX_TOKENS = {torch.bfloat16: 8, torch.float32: 128}


@dataclass(frozen=True)
class Int4Groups:
    """One weight [N, K] as 4-bit codes with a scale and a zero per group of 32 inputs."""

    codes: torch.Tensor  # [N, K] uint8 in 0..15
    scales: torch.Tensor  # [N, K / 32] float32
    zeros: torch.Tensor  # [N, K / 32] float32: the value of code 8

    def dequantize(self) -> torch.Tensor:  # [N, K] float32
        scales = self.scales.repeat_interleave(GROUP_SIZE, dim=1)
        zeros = self.zeros.repeat_interleave(GROUP_SIZE, dim=1)
        return (self.codes.float() - 8) * scales + zeros

    @staticmethod
    def cat(parts: list[Int4Groups]) -> Int4Groups:
        """Stack weights along the output axis (q|k|v, gate|up)."""
        return Int4Groups(
            torch.cat([p.codes for p in parts]),
            torch.cat([p.scales for p in parts]),
            torch.cat([p.zeros for p in parts]),
        )


@dataclass(frozen=True)
class PackedInt4:
    """`Int4Groups` in the CPU kernel's layout, ready to multiply."""

    weight: torch.Tensor  # [N, K / 2] uint8, the kernel's tiling
    scales_and_zeros: torch.Tensor  # [K / 32, N, 2] in the activation dtype


def can_use_int4(device: torch.device, dtype: torch.dtype) -> bool:
    """bfloat16 activations use PyTorch's CPU kernel; float32 ones the native kernel (PyTorch's
    takes a slow path for them), where it builds."""
    if device.type != "cpu":
        return False
    return dtype == torch.bfloat16 or (dtype == torch.float32 and load_block_matmul() is not None)


def int4_max_tokens(configured: int | None, dtype: torch.dtype) -> int:
    """The configured width, or (None) the measured default for `dtype`; 0: never 4-bit."""
    return DEFAULT_MAX_TOKENS.get(dtype, 0) if configured is None else configured


def pack_int4(groups: Int4Groups, dtype: torch.dtype) -> PackedInt4 | Int4Panels:
    """`groups` in the layout of the kernel that serves `dtype` activations."""
    if dtype == torch.float32:
        return Int4Panels.pack(groups.codes, groups.scales, groups.zeros)
    weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(groups.codes.to(torch.int32), 1)
    scales_and_zeros = torch.stack((groups.scales.t(), groups.zeros.t()), dim=-1)  # [K/32, N, 2]
    return PackedInt4(weight, scales_and_zeros.to(dtype).contiguous())


def int4_linear(x: torch.Tensor, packed: PackedInt4 | Int4Panels) -> torch.Tensor:
    """x [M, K] @ w.T -> [M, N]."""
    if isinstance(packed, Int4Panels):
        return load_block_matmul().int4(x, packed)
    return torch.ops.aten._weight_int4pack_mm_for_cpu(
        x, packed.weight, GROUP_SIZE, packed.scales_and_zeros
    )
