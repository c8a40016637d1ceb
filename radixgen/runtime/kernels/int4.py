"""4-bit grouped weights for small batches: the checkpoint's own Q4 blocks, multiplied directly.

Decoding a few tokens is bound by reading the weights. A GGUF file in Q4_0 or Q4_1 stores each
run of 32 inputs of an output row as 4-bit codes with a scale (and, Q4_1, an offset), so keeping
those codes instead of the dequantized matrix reads a quarter of the bytes of bfloat16 (an
eighth of float32). Both kernels multiply by exactly this form,

    w[n, k] = (codes[n, k] - 8) * scales[n, k // 32] + zeros[n, k // 32]

so the weights are the file's own values, not a second quantization. For bfloat16 activations:
radixgen's AVX512-BF16 kernel (`bf16_block_matmul.py`, 2-3x faster, float32 scales) where the CPU
has it, else PyTorch's CPU kernel `_weight_int4pack_mm_for_cpu` (scales and zeros rounded to
bfloat16); for float32 ones radixgen's native kernel (`block_matmul.py`). `Int4Matmul` is that
choice, made once per engine. Wide batches (prefill) stay on the dense GEMM, faster there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from radixgen.runtime.kernels.bf16_block_matmul import Bf16BlockMatmulKernel, Bf16Int4Panels
from radixgen.runtime.kernels.block_matmul import GROUP_SIZE, BlockMatmulKernel, Int4Panels


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
    """`Int4Groups` in PyTorch's CPU kernel layout, ready to multiply."""

    weight: torch.Tensor  # [N, K / 2] uint8, the kernel's tiling
    scales_and_zeros: torch.Tensor  # [K / 32, N, 2] in the activation dtype


class Int4Matmul:
    """The 4-bit matmul for one activation dtype: for bfloat16 the native AVX512-BF16 kernel if
    given, else PyTorch's; for float32 the native block kernel. `pack` turns groups into its
    layout, a call multiplies."""

    def __init__(
        self,
        dtype: torch.dtype,
        block_matmul: BlockMatmulKernel | None = None,
        bf16_block_matmul: Bf16BlockMatmulKernel | None = None,
    ):
        if dtype == torch.float32 and block_matmul is None:
            raise ValueError("float32 activations need the native block matmul kernel")
        if dtype not in (torch.bfloat16, torch.float32):
            raise ValueError(f"no 4-bit kernel for {dtype} activations")
        self.dtype = dtype
        self._block_matmul = block_matmul
        self._bf16_block_matmul = bf16_block_matmul if dtype == torch.bfloat16 else None

    @staticmethod
    def choose(
        device: torch.device,
        dtype: torch.dtype,
        block_matmul: BlockMatmulKernel | None,
        bf16_block_matmul: Bf16BlockMatmulKernel | None = None,
    ) -> Int4Matmul | None:
        """The 4-bit matmul that serves `dtype` activations on `device`, or None (dense only):
        bfloat16 on the CPU, float32 on the CPU where the block kernel loaded (PyTorch's kernel
        takes a slow path for float32)."""
        if device.type != "cpu":
            return None
        if dtype == torch.bfloat16 or (dtype == torch.float32 and block_matmul is not None):
            return Int4Matmul(dtype, block_matmul, bf16_block_matmul)
        return None

    @property
    def is_native(self) -> bool:
        """Whether a radixgen kernel (not PyTorch's) multiplies."""
        return self.dtype == torch.float32 or self._bf16_block_matmul is not None

    def pack(self, groups: Int4Groups) -> PackedInt4 | Int4Panels | Bf16Int4Panels:
        """`groups` in the layout of this matmul's kernel."""
        if self.dtype == torch.float32:
            return Int4Panels.pack(groups.codes, groups.scales, groups.zeros)
        if self._bf16_block_matmul is not None:
            return Bf16Int4Panels.pack(groups.codes, groups.scales, groups.zeros)
        codes = groups.codes.to(torch.int32)
        weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        scales_and_zeros = torch.stack((groups.scales.t(), groups.zeros.t()), dim=-1)  # [K/32,N,2]
        return PackedInt4(weight, scales_and_zeros.to(self.dtype).contiguous())

    def __call__(
        self, x: torch.Tensor, packed: PackedInt4 | Int4Panels | Bf16Int4Panels
    ) -> torch.Tensor:
        """x [M, K] @ w.T -> [M, N]."""
        if isinstance(packed, Bf16Int4Panels):
            return self._bf16_block_matmul.int4(x, packed)
        if isinstance(packed, Int4Panels):
            return self._block_matmul.int4(x, packed)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(
            x, packed.weight, GROUP_SIZE, packed.scales_and_zeros
        )
