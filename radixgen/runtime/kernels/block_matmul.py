"""float32 x GGUF block-quantized weights (`block_matmul.c`).

PyTorch's int4 CPU kernel is fast for bfloat16 activations only (float32 ones take a path many
times slower than the dense GEMM), and it has no 8-bit counterpart. This kernel serves float32
engines: it rebuilds each weight from the file's 4-bit (Q4_0/Q4_1) or 8-bit (Q8_0) code in
float32 and multiplies, so a decode step reads 4.5 or 8.5 bits per weight instead of 32. The
codes are repacked once into column panels (8 columns interleaved, `Int4Panels`/`Int8Panels`):
each thread decodes 16 columns at a time and multiplies every row by them in register tiles
that keep outputs in vector lanes; up to 4 rows decode in registers without a panel. Where it
beats oneDNN's dense GEMM, and up to which width: `Tuning.int4_max_tokens_float32` and
`int8_head_max_tokens`, measured in docs/tuning.md.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from radixgen.runtime.kernels.binding import Scalar, Signature, Tensor, bind

GROUP_SIZE = 32  # inputs per scale: the block size of GGUF's Q4_0, Q4_1 and Q8_0


PANEL_COLS = 16  # the kernel decodes this many columns at a time; packing pads N to it
_BLOCK_COLS = 8  # columns whose codes lie interleaved (one vector lane each)
_CODES_PER_WORD = 8  # 4-bit codes (consecutive inputs of one column) in an int32 word


def _column_blocks(t: torch.Tensor) -> torch.Tensor:
    """[N, ...] -> [N', ...] with zero rows appended up to a multiple of PANEL_COLS."""
    missing = -t.shape[0] % PANEL_COLS
    return torch.cat([t, t.new_zeros(missing, *t.shape[1:])]) if missing else t


def _interleave(t: torch.Tensor) -> torch.Tensor:
    """[N', W] -> [N' / 8, W, 8]: element (b, w, i) is t[8b + i, w]."""
    return t.reshape(-1, _BLOCK_COLS, t.shape[1]).transpose(1, 2).contiguous()


@dataclass(frozen=True)
class Int4Panels:
    """A 4-bit weight [N, K] in the kernel's column-panel layout (see `block_matmul.c`):
    w[n, k] = (code - 8) * scale + zero, per group of 32 inputs."""

    codes: torch.Tensor  # [N' / 8, K / 8, 8] int32: nibble j of (b, p, i) = code[8b + i, 8p + j]
    scales: torch.Tensor  # [N' / 8, K / 32, 8] float32
    zeros: torch.Tensor  # [N' / 8, K / 32, 8] float32
    cols: int  # N; N' pads it to a multiple of PANEL_COLS with zero weights

    @staticmethod
    def pack(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> Int4Panels:
        """From codes [N, K] (uint8 0..15) and per-group scales and zeros [N, K / 32]."""
        n, k = codes.shape
        nibbles = _interleave(_column_blocks(codes.to(torch.uint8)))  # [N'/8, K, 8]
        words = nibbles.reshape(-1, k // _CODES_PER_WORD, _CODES_PER_WORD, _BLOCK_COLS)
        words = words.transpose(2, 3)  # [N'/8, K/8, i, j]
        pairs = words[..., 0::2] | (words[..., 1::2] << 4)  # little-endian bytes of the words
        return Int4Panels(
            pairs.contiguous().view(torch.int32).reshape(-1, k // _CODES_PER_WORD, _BLOCK_COLS),
            _interleave(_column_blocks(scales.float())),
            _interleave(_column_blocks(zeros.float())),
            n,
        )


@dataclass(frozen=True)
class Int8Panels:
    """An 8-bit weight [N, K] in the kernel's column-panel layout: w[n, k] = code * scale."""

    codes: torch.Tensor  # [N' / 8, K, 8] int8: (b, k, i) = code[8b + i, k]
    scales: torch.Tensor  # [N' / 8, K / 32, 8] float32
    cols: int  # N; N' pads it to a multiple of PANEL_COLS with zero weights


@dataclass(frozen=True)
class Int8Blocks:
    """A weight [N, K] as GGUF's Q8_0 stores it: w[n, k] = codes[n, k] * scales[n, k // 32]."""

    codes: torch.Tensor  # [N, K] int8
    scales: torch.Tensor  # [N, K / 32] float32 (the file's float16 scales, exactly)

    def dequantize(self) -> torch.Tensor:  # [N, K] float32, exact
        return self.codes.float() * self.scales.repeat_interleave(GROUP_SIZE, dim=1)

    def panels(self) -> Int8Panels:
        """The same weights in the kernel's layout."""
        return Int8Panels(
            _interleave(_column_blocks(self.codes)),
            _interleave(_column_blocks(self.scales.float())),
            self.codes.shape[0],
        )


_F32 = (torch.float32,)


def _matmul_signature(name: str, codes: torch.dtype, zeros: bool) -> Signature:
    """int4_matmul_f32 / int8_matmul_f32: x, its shape, the weight's panels, N', threads, out."""
    weight = [
        Tensor("codes", (codes,), rank=3),
        Tensor("scales", _F32, rank=3),
        *([Tensor("zeros", _F32, rank=3)] if zeros else []),
    ]
    return Signature(
        name,
        "int",
        (
            Tensor("x", _F32, rank=2),
            Scalar("rows", "int64"),
            Scalar("k", "int64"),
            *weight,
            Scalar("cols", "int64"),
            Scalar("num_threads", "int"),
            Tensor("out", _F32, rank=2),
        ),
    )


SIGNATURES = (
    Signature("block_matmul_available", "int", ()),
    _matmul_signature("int4_matmul_f32", torch.int32, zeros=True),
    _matmul_signature("int8_matmul_f32", torch.int8, zeros=False),
)


class BlockMatmulKernel:
    def __init__(self, library: ctypes.CDLL):
        self._int4 = bind(library, SIGNATURES[1])
        self._int8 = bind(library, SIGNATURES[2])

    def int4(self, x: torch.Tensor, weight: Int4Panels) -> torch.Tensor:
        """x [M, K] float32 @ w.T -> [M, N] float32."""
        width = weight.codes.shape[1] * _CODES_PER_WORD
        x, out = _operands(x, width, weight.codes)
        status = self._int4(
            x=x,
            rows=x.shape[0],
            k=width,
            codes=weight.codes,
            scales=weight.scales,
            zeros=weight.zeros,
            cols=out.shape[1],
            num_threads=torch.get_num_threads(),
            out=out,
        )
        return _result(status, out, weight.cols)

    def int8(self, x: torch.Tensor, weight: Int8Panels) -> torch.Tensor:
        """x [M, K] float32 @ w.T -> [M, N] float32."""
        width = weight.codes.shape[1]
        x, out = _operands(x, width, weight.codes)
        status = self._int8(
            x=x,
            rows=x.shape[0],
            k=width,
            codes=weight.codes,
            scales=weight.scales,
            cols=out.shape[1],
            num_threads=torch.get_num_threads(),
            out=out,
        )
        return _result(status, out, weight.cols)


def _operands(x: torch.Tensor, width: int, codes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """x made contiguous, and the output [M, N'] for a weight whose codes are [N' / 8, ...]."""
    if x.shape[1] != width:
        raise ValueError(f"input width {x.shape[1]} does not fit a weight of width {width}")
    out = torch.empty(x.shape[0], codes.shape[0] * _BLOCK_COLS, dtype=torch.float32)
    return x.contiguous(), out


def _result(status: int, out: torch.Tensor, cols: int) -> torch.Tensor:
    """The first `cols` columns of a call's output, or its failure as an exception."""
    if status == -1:
        raise ValueError("block matmul kernel: the input width is no multiple of 32")
    if status != 0:
        raise MemoryError("block matmul kernel: no memory for its decoding panel")
    return out if out.shape[1] == cols else out[:, :cols]


def load_block_matmul(library: ctypes.CDLL | None) -> BlockMatmulKernel | None:
    """The kernel of `library` (the built block_matmul.c, None if it did not build), or None
    where that build cannot multiply (no AVX2)."""
    if library is None or not bind(library, SIGNATURES[0])():
        return None
    return BlockMatmulKernel(library)
