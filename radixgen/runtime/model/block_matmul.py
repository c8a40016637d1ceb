"""float32 x GGUF block-quantized weights (native kernel `kernels/block_matmul.c`).

PyTorch's int4 CPU kernel is fast for bfloat16 activations only (float32 ones take a path ~10x
slower than the dense GEMM), and it has no 8-bit counterpart. This kernel serves float32
engines: it rebuilds each weight from the file's 4-bit (Q4_0/Q4_1) or 8-bit (Q8_0) code in
float32 and multiplies, so a decode step reads 4.5 or 8.5 bits per weight instead of 32. Each
thread decodes four columns at a time into a float32 panel and multiplies every row by it in
register tiles. On a 2-core AVX2 EPYC (Zen 3): SmolLM2's 30 layers of 4-bit projections,
streamed from memory, per layer 0.47 vs 1.40 ms for oneDNN's dense float32 GEMM at one row,
1.29 vs 2.06 at 12 rows, 4.1 vs 4.6 at 48, slower beyond ~64 rows; its Q8_0 output head
(49,152 x 576) 2.6 vs 7.6 ms at one row, 9.4 vs 12.8 at 12, even at 24.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import torch

from radixgen.runtime.model.native import load_kernel

_i64, _ptr, _int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
GROUP_SIZE = 32  # inputs per scale: the block size of GGUF's Q4_0, Q4_1 and Q8_0
# Widest pass (rows) for which the output head multiplies by its Q8_0 blocks: SmolLM2's head on
# the EPYC, 2 threads, best of 7: 2.6 vs 7.6 ms (oneDNN, dense float32) at 1 row, 9.4 vs 12.8
# at 12, 18.2 vs 18.9 at 24, 35.0 vs 30.6 at 48.
INT8_HEAD_MAX_TOKENS = 16


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


@dataclass(frozen=True)
class Int8Blocks:
    """A weight [N, K] as GGUF's Q8_0 stores it: w[n, k] = codes[n, k] * scales[n, k // 32]."""

    codes: torch.Tensor  # [N, K] int8
    scales: torch.Tensor  # [N, K / 32] float32 (the file's float16 scales, exactly)

    def dequantize(self) -> torch.Tensor:  # [N, K] float32, exact
        return self.codes.float() * self.scales.repeat_interleave(GROUP_SIZE, dim=1)


class BlockMatmulKernel:
    def __init__(self, library: ctypes.PyDLL):
        self._int4 = library.int4_matmul_f32
        self._int4.restype = ctypes.c_int
        self._int4.argtypes = [_ptr, _i64, _i64, _ptr, _ptr, _ptr, _i64, _int, _ptr]
        self._int8 = library.int8_matmul_f32
        self._int8.restype = ctypes.c_int
        self._int8.argtypes = [_ptr, _i64, _i64, _ptr, _ptr, _i64, _int, _ptr]

    def int4(self, x: torch.Tensor, weight: NibbleInt4) -> torch.Tensor:
        """x [M, K] float32 @ w.T -> [M, N] float32."""
        codes = weight.codes  # [N, K / 2]
        return _multiply(self._int4, x, codes.shape[1] * 2, codes, weight.scales, weight.zeros)

    def int8(self, x: torch.Tensor, weight: Int8Blocks) -> torch.Tensor:
        """x [M, K] float32 @ w.T -> [M, N] float32."""
        return _multiply(self._int8, x, weight.codes.shape[1], weight.codes, weight.scales)


def _multiply(run, x: torch.Tensor, width: int, *weight: torch.Tensor) -> torch.Tensor:
    """Call one of the kernel's entry points: x, its shape, the weight's tensors (the codes
    first, [N, ...]), N, threads, out."""
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise ValueError("the block matmul kernel takes float32 CPU inputs")
    if x.shape[1] != width:
        raise ValueError(f"input width {x.shape[1]} does not fit a weight of width {width}")
    x = x.contiguous()
    rows, cols = x.shape[0], weight[0].shape[0]
    out = torch.empty(rows, cols, dtype=torch.float32)
    pointers = (t.data_ptr() for t in weight)
    status = run(
        x.data_ptr(), rows, width, *pointers, cols, torch.get_num_threads(), out.data_ptr()
    )
    if status == -1:
        raise ValueError("block matmul kernel: the input width is no multiple of 32")
    if status != 0:
        raise MemoryError("block matmul kernel: no memory for its decoding panel")
    return out


@functools.cache
def load_block_matmul() -> BlockMatmulKernel | None:
    """The kernel, or None where native kernels are unavailable (see `native.py`) or the CPU
    lacks AVX2."""
    library = load_kernel("block_matmul")
    if library is None or not library.block_matmul_available():
        return None
    return BlockMatmulKernel(library)
