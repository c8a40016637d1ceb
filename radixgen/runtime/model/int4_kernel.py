"""float32 x 4-bit grouped weights (native kernel `kernels/int4_matmul.c`).

PyTorch's int4 CPU kernel is fast for bfloat16 activations only (float32 ones take a path ~10x
slower than the dense GEMM). This kernel serves float32 engines: it rebuilds each weight from
its 4-bit code in float32 and multiplies, so a decode step reads 4.5 bits per weight instead of
32. Each thread decodes four columns at a time into a float32 panel and multiplies every row by
it in register tiles. On a 2-core AVX2 EPYC (Zen 3), SmolLM2's 30 layers of projections,
streamed from memory, per layer: 0.47 vs 1.40 ms for oneDNN's dense float32 GEMM at one row,
1.29 vs 2.06 at 12 rows, 4.1 vs 4.6 at 48; beyond ~64 rows the dense GEMM is faster.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import torch

from radixgen.runtime.model.native import load_kernel

_i64, _ptr = ctypes.c_int64, ctypes.c_void_p


@dataclass(frozen=True)
class NibbleInt4:
    """A weight [N, K] in the kernel's layout: GGUF's Q4 block order, float32 scales/zeros."""

    codes: torch.Tensor  # [N, K / 2] uint8: per group of 32, byte i = element i | element i+16 << 4
    scales: torch.Tensor  # [N, K / 32] float32
    zeros: torch.Tensor  # [N, K / 32] float32

    @staticmethod
    def pack(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> NibbleInt4:
        """From codes [N, K] (uint8 0..15) and per-group scales and zeros [N, K / 32]."""
        n, k = codes.shape
        halves = codes.reshape(n, k // 32, 2, 16)
        packed = (halves[:, :, 0] | (halves[:, :, 1] << 4)).reshape(n, k // 2)
        return NibbleInt4(
            packed.contiguous(), scales.float().contiguous(), zeros.float().contiguous()
        )


class Int4MatmulKernel:
    def __init__(self, library: ctypes.PyDLL):
        self._run = library.int4_matmul_f32
        self._run.restype = ctypes.c_int
        self._run.argtypes = [_ptr, _i64, _i64, _ptr, _ptr, _ptr, _i64, ctypes.c_int, _ptr]

    def __call__(self, x: torch.Tensor, weight: NibbleInt4) -> torch.Tensor:
        """x [M, K] float32 @ w.T -> [M, N] float32."""
        if x.dtype != torch.float32 or x.device.type != "cpu":
            raise ValueError("the int4 matmul kernel takes float32 CPU inputs")
        x = x.contiguous()
        rows, k = x.shape
        cols = weight.codes.shape[0]
        if weight.codes.shape[1] * 2 != k:
            raise ValueError(
                f"input width {k} does not fit a weight of width {weight.codes.shape[1] * 2}"
            )
        out = torch.empty(rows, cols, dtype=torch.float32)
        status = self._run(
            x.data_ptr(),
            rows,
            k,
            weight.codes.data_ptr(),
            weight.scales.data_ptr(),
            weight.zeros.data_ptr(),
            cols,
            torch.get_num_threads(),
            out.data_ptr(),
        )
        if status != 0:
            raise MemoryError("int4 matmul kernel: no memory for its decoding panel")
        return out


@functools.cache
def load_int4_matmul() -> Int4MatmulKernel | None:
    """The kernel, or None where native kernels are unavailable (see `native.py`) or the CPU
    lacks AVX2."""
    library = load_kernel("int4_matmul")
    if library is None or not library.int4_matmul_available():
        return None
    return Int4MatmulKernel(library)
