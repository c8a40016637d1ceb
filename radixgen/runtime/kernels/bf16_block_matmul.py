"""bfloat16 x GGUF block-quantized weights with AVX512-BF16 dot products (`bf16_block_matmul.c`).

A bfloat16 engine's decode step multiplies a few rows by every projection; reading the weights
bounds it. PyTorch's int4 CPU kernel decodes codes at about 6 GB/s per core, a fraction of the
memory bandwidth, and has no 8-bit counterpart for the head. This kernel turns codes into
bfloat16 with one OR (4-bit) or an exact conversion (8-bit) and multiplies with `vdpbf16ps`,
keeping the file's scales in float32. It exists only where the CPU has AVX512-BF16; elsewhere
bfloat16 engines keep PyTorch's kernel (4-bit) and the dense head.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from radixgen.runtime.kernels.binding import Scalar, Signature, Tensor, bind

GROUP_SIZE = 32
PANEL_COLS = 16  # one float32 lane per column


def _pad_cols(t: torch.Tensor) -> torch.Tensor:
    """[N, ...] -> [N', ...] with zero rows appended up to a multiple of PANEL_COLS."""
    missing = -t.shape[0] % PANEL_COLS
    return torch.cat([t, t.new_zeros(missing, *t.shape[1:])]) if missing else t


def _panel_groups(t: torch.Tensor) -> torch.Tensor:
    """Per-group values [N, K / 32] -> [N' / 16, K / 32, 16] float32, one lane per column."""
    t = _pad_cols(t.float())
    return t.reshape(-1, PANEL_COLS, t.shape[1]).transpose(1, 2).contiguous()


def _as_half_if_exact(*values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`values` as float16 when every element is a float16 value, else as float32."""
    halves = tuple(v.half() for v in values)
    exact = all(torch.equal(h.float(), v) for h, v in zip(halves, values, strict=True))
    return halves if exact else values


@dataclass(frozen=True)
class Bf16Int4Panels:
    """A 4-bit weight [N, K] in the kernel's layout: w = code * scale + min per group."""

    codes: torch.Tensor  # [N' / 16, K / 4, 32] uint8 (see bf16_block_matmul.c)
    scales: torch.Tensor  # [N' / 16, K / 32, 16] float16 where exact (GGUF's own), else float32
    mins: torch.Tensor  # [N' / 16, K / 32, 16] as scales: the weight of code 0
    cols: int  # N

    @property
    def half(self) -> bool:
        """Whether the scales and mins are float16 (half the bytes of float32 ones)."""
        return self.scales.dtype == torch.float16

    @staticmethod
    def pack(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> Bf16Int4Panels:
        """From codes [N, K] (0..15) and per-group scales and zeros [N, K / 32] (w = (code - 8)
        * scale + zero)."""
        n, k = codes.shape
        c = _pad_cols(codes.to(torch.uint8))  # [N', K]
        # [N'/16, 16 cols, K/4 quads, 2 halves, 2 inputs] -> [N'/16, K/4, 2 halves, 16, 2]
        c = c.reshape(-1, PANEL_COLS, k // 4, 2, 2).permute(0, 2, 3, 1, 4)
        packed = c[:, :, 0] | (c[:, :, 1] << 4)  # [N'/16, K/4, 16, 2]: byte 2i + j
        scales = scales.float()
        mins = zeros.float() - 8 * scales  # GGUF's m: exact where zero = m + 8 d was
        scales, mins = _as_half_if_exact(_panel_groups(scales), _panel_groups(mins))
        codes_layout = packed.reshape(-1, k // 4, 2 * PANEL_COLS).contiguous()
        return Bf16Int4Panels(codes_layout, scales, mins, n)


@dataclass(frozen=True)
class Bf16Int8Panels:
    """An 8-bit weight [N, K] in the kernel's layout: w = code * scale per group."""

    codes: torch.Tensor  # [N' / 16, K / 2, 32] int8: byte 2i + j of (p, q) = code[16p+i, 2q+j]
    scales: torch.Tensor  # [N' / 16, K / 32, 16] float32
    cols: int  # N

    @staticmethod
    def pack(codes: torch.Tensor, scales: torch.Tensor) -> Bf16Int8Panels:
        """From codes [N, K] int8 and per-group scales [N, K / 32]."""
        n, k = codes.shape
        c = _pad_cols(codes.to(torch.int8))  # [N', K]
        c = c.reshape(-1, PANEL_COLS, k // 2, 2).permute(0, 2, 1, 3)  # [N'/16, K/2, 16, 2]
        return Bf16Int8Panels(
            c.reshape(-1, k // 2, 2 * PANEL_COLS).contiguous(), _panel_groups(scales), n
        )


_BF16, _F32 = (torch.bfloat16,), (torch.float32,)
_GROUP_VALUES = (torch.float16, torch.float32)


def _signature(name: str, codes: torch.dtype, four_bit: bool) -> Signature:
    if four_bit:
        weight = [
            Tensor("codes", (codes,), rank=3),
            Tensor("scales", _GROUP_VALUES, rank=3),
            Tensor("mins", _GROUP_VALUES, rank=3, same_dtype_as="scales"),
            Scalar("half", "int"),
        ]
    else:
        weight = [Tensor("codes", (codes,), rank=3), Tensor("scales", _F32, rank=3)]
    return Signature(
        name,
        "int",
        (
            Tensor("x", _BF16, rank=2, layout="rows"),
            Scalar("x_stride", "int64"),
            Scalar("rows", "int64"),
            Scalar("k", "int64"),
            *weight,
            Scalar("cols", "int64"),
            Scalar("num_threads", "int"),
            Tensor("out", _BF16 if four_bit else _F32, rank=2),
        ),
    )


SIGNATURES = (
    Signature("bf16_block_matmul_available", "int", ()),
    _signature("int4_matmul_bf16", torch.uint8, four_bit=True),
    _signature("int8_matmul_bf16", torch.int8, four_bit=False),
)


class Bf16BlockMatmulKernel:
    """The kernel's two entry points, with their operands checked and shaped."""

    def __init__(self, library: ctypes.CDLL):
        self._int4 = bind(library, SIGNATURES[1])
        self._int8 = bind(library, SIGNATURES[2])

    def int4(self, x: torch.Tensor, weight: Bf16Int4Panels) -> torch.Tensor:
        """x [M, K] bfloat16 @ w.T -> [M, N] bfloat16."""
        return self._call(
            self._int4, x, weight, 4, torch.bfloat16, mins=weight.mins, half=int(weight.half)
        )

    def int8(self, x: torch.Tensor, weight: Bf16Int8Panels) -> torch.Tensor:
        """x [M, K] bfloat16 @ w.T -> [M, N] float32 (logits)."""
        return self._call(self._int8, x, weight, 2, torch.float32)

    @staticmethod
    def _call(entry, x, weight, inputs_per_code_row: int, out_dtype: torch.dtype, **extra):
        """One entry point on x and a packed weight whose codes are [N' / 16, K / n, 32]."""
        k = weight.codes.shape[1] * inputs_per_code_row
        x = _rows_of(x, k)
        out = torch.empty(x.shape[0], weight.codes.shape[0] * PANEL_COLS, dtype=out_dtype)
        status = entry(
            x=x,
            x_stride=x.stride(0),
            rows=x.shape[0],
            k=k,
            codes=weight.codes,
            scales=weight.scales,
            cols=out.shape[1],
            num_threads=torch.get_num_threads(),
            out=out,
            **extra,
        )
        return _result(status, out, weight.cols)


def _rows_of(x: torch.Tensor, k: int) -> torch.Tensor:
    """x with unit column stride (rows may lie apart), checked against the weight's width."""
    if x.dim() != 2 or x.shape[1] != k:
        raise ValueError(f"input {tuple(x.shape)} does not fit a weight of width {k}")
    return x if x.stride(1) == 1 else x.contiguous()


def _result(status: int, out: torch.Tensor, cols: int) -> torch.Tensor:
    if status == -1:
        raise ValueError("bf16 block matmul: the input width is no multiple of 32")
    if status != 0:
        raise MemoryError("bf16 block matmul: no memory for the group sums")
    return out if out.shape[1] == cols else out[:, :cols]


def load_bf16_block_matmul(library: ctypes.CDLL | None) -> Bf16BlockMatmulKernel | None:
    """The kernel of `library` (the built bf16_block_matmul.c, None if it did not build), or
    None where that build has no AVX512-BF16."""
    if library is None or not bind(library, SIGNATURES[0])():
        return None
    return Bf16BlockMatmulKernel(library)
