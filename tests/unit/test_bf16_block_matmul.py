"""The AVX512-BF16 block matmul: bfloat16 activations times the file's 4-bit and 8-bit codes.

The packing is checked on any CPU (unpacked again in Python); the products where the CPU has
AVX512-BF16, against the dequantized weights in float32; elsewhere the engine must not choose it.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from radixgen.runtime.config import EngineConfig
from radixgen.runtime.kernels.bf16_block_matmul import (
    PANEL_COLS,
    Bf16Int4Panels,
    Bf16Int8Panels,
    load_bf16_block_matmul,
)
from radixgen.runtime.kernels.block_matmul import Int8Blocks
from radixgen.runtime.kernels.build import load_library
from radixgen.runtime.kernels.cpu import cpu_features
from radixgen.runtime.kernels.engine_kernels import EngineKernels
from radixgen.runtime.kernels.int4 import Int4Groups, Int4Matmul

GEN = torch.Generator().manual_seed(0)


def int4_groups(n: int, k: int) -> Int4Groups:
    return Int4Groups(
        torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=GEN),
        torch.rand(n, k // 32, generator=GEN) * 0.05,
        torch.randn(n, k // 32, generator=GEN) * 0.05,
    )


def gguf_int4_groups(n: int, k: int) -> Int4Groups:
    """Groups as GGUF's Q4_1 stores them: d and m are float16 values (zero = m + 8 d)."""
    d = (torch.rand(n, k // 32, generator=GEN) * 0.05).half().float()
    m = (torch.randn(n, k // 32, generator=GEN) * 0.05).half().float()
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=GEN)
    return Int4Groups(codes, d, m + 8 * d)


INT4_KINDS = {"float32 scales": int4_groups, "gguf float16 scales": gguf_int4_groups}


def int8_blocks(n: int, k: int) -> Int8Blocks:
    codes = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=GEN)
    return Int8Blocks(codes, torch.rand(n, k // 32, generator=GEN) * 0.01)


def unpack_int4(panels: Bf16Int4Panels) -> torch.Tensor:  # [N', K] codes
    """The layout of bf16_block_matmul.c, read back: byte 2i + j of (p, q) holds column 16p + i,
    inputs 4q + j (low nibble) and 4q + 2 + j (high nibble)."""
    p, quads, _ = panels.codes.shape
    b = panels.codes.reshape(p, quads, PANEL_COLS, 2)
    low, high = b & 15, b >> 4  # [P, K/4, 16, 2]
    codes = torch.stack((low, high), dim=2)  # [P, K/4, half, 16, j]
    return codes.permute(0, 3, 1, 2, 4).reshape(p * PANEL_COLS, quads * 4)


def test_int4_packing_keeps_every_code_scale_and_zero():
    groups = int4_groups(40, 96)  # 40 columns: padded to 48
    panels = Bf16Int4Panels.pack(groups.codes, groups.scales, groups.zeros)
    assert panels.codes.shape == (3, 24, 32) and panels.cols == 40
    codes = unpack_int4(panels)
    assert torch.equal(codes[:40], groups.codes) and not codes[40:].any()
    scales = panels.scales.transpose(1, 2).reshape(48, 3)
    mins = panels.mins.transpose(1, 2).reshape(48, 3)
    assert not panels.half  # random float32 scales: kept as they are
    assert torch.equal(scales[:40], groups.scales)
    torch.testing.assert_close(mins[:40], groups.zeros - 8 * groups.scales)


def test_int4_packing_keeps_gguf_scales_and_mins_in_float16():
    """GGUF's Q4_1 d and m are float16 values: packed in float16, exactly (half the bytes)."""
    groups = int4_groups(40, 96)
    d = groups.scales.half().float()
    m = (groups.zeros - 8 * groups.scales).half().float()
    panels = Bf16Int4Panels.pack(groups.codes, d, m + 8 * d)
    assert panels.half and panels.mins.dtype == torch.float16
    assert torch.equal(panels.scales.transpose(1, 2).reshape(48, 3)[:40].float(), d)
    assert torch.equal(panels.mins.transpose(1, 2).reshape(48, 3)[:40].float(), m)


def test_int8_packing_keeps_every_code():
    blocks = int8_blocks(20, 64)
    panels = Bf16Int8Panels.pack(blocks.codes, blocks.scales)
    assert panels.codes.shape == (2, 32, 32)
    codes = panels.codes.reshape(2, 32, PANEL_COLS, 2).permute(0, 2, 1, 3).reshape(32, 64)
    assert torch.equal(codes[:20], blocks.codes) and not codes[20:].any()


@pytest.fixture(scope="module")
def kernel():
    found = load_bf16_block_matmul(load_library("bf16_block_matmul"))
    if found is None:
        pytest.skip("this CPU (or build) has no AVX512-BF16")
    return found


@pytest.mark.parametrize("kind", INT4_KINDS)
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 9])
def test_int4_product_matches_the_dequantized_weights(kernel, rows, kind):
    """Every row-tile width, a padded column count, strided input rows, float32 and float16
    group values; the error is bfloat16 output rounding (the products and sums are float32)."""
    groups = INT4_KINDS[kind](72, 192)
    wide = torch.randn(rows, 256, generator=GEN).bfloat16()
    x = wide[:, 32:224]  # rows 256 elements apart
    expected = x.float() @ groups.dequantize().t()
    panels = Bf16Int4Panels.pack(groups.codes, groups.scales, groups.zeros)
    assert panels.half == (kind == "gguf float16 scales")
    got = kernel.int4(x, panels)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, 72)
    torch.testing.assert_close(got.float(), expected, rtol=8e-3, atol=2e-3)


@pytest.mark.parametrize("rows", [1, 4, 6])
def test_int8_product_is_float32_exact(kernel, rows):
    """Codes and bfloat16 inputs multiply exactly; only float32 summation order differs."""
    blocks = int8_blocks(50, 128)
    x = torch.randn(rows, 128, generator=GEN).bfloat16()
    expected = x.double() @ blocks.dequantize().double().t()
    got = kernel.int8(x, Bf16Int8Panels.pack(blocks.codes, blocks.scales))
    assert got.dtype == torch.float32 and got.shape == (rows, 50)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", INT4_KINDS)
def test_a_row_gets_the_same_bits_whatever_rows_share_its_pass(kernel, kind):
    """Every tile width sums in one order: a verify pass of several tokens must round each
    row exactly as a one-row decode step does (speculation then changes no bfloat16 output)."""
    groups, blocks = INT4_KINDS[kind](64, 256), int8_blocks(48, 256)
    int4 = Bf16Int4Panels.pack(groups.codes, groups.scales, groups.zeros)
    int8 = Bf16Int8Panels.pack(blocks.codes, blocks.scales)
    x = torch.randn(7, 256, generator=GEN).bfloat16()
    alone4 = torch.cat([kernel.int4(x[i : i + 1], int4) for i in range(7)])
    alone8 = torch.cat([kernel.int8(x[i : i + 1], int8) for i in range(7)])
    for rows in (2, 3, 4, 7):
        assert torch.equal(kernel.int4(x[:rows], int4), alone4[:rows]), rows
        assert torch.equal(kernel.int8(x[:rows], int8), alone8[:rows]), rows


def test_a_wrong_width_is_refused(kernel):
    groups = int4_groups(16, 64)
    with pytest.raises(ValueError, match="does not fit"):
        kernel.int4(
            torch.zeros(1, 32).bfloat16(), Bf16Int4Panels.pack(*dataclasses.astuple(groups))
        )


def test_the_engine_takes_it_only_for_bfloat16_on_avx512_bf16():
    here = cpu_features()
    bfloat16 = EngineKernels.choose(EngineConfig(dtype="bfloat16"), head_dim=64)
    assert (bfloat16.bf16_block_matmul is not None) == (
        here.avx512_bf16 and load_bf16_block_matmul(load_library("bf16_block_matmul")) is not None
    )
    assert bfloat16.int4.is_native == (bfloat16.bf16_block_matmul is not None)
    assert (bfloat16.int8 is not None) == (bfloat16.bf16_block_matmul is not None)
    no_bf16 = dataclasses.replace(here, avx512_bf16=False, amx=False)
    fallback = EngineKernels.choose(EngineConfig(dtype="bfloat16"), head_dim=64, cpu=no_bf16)
    assert fallback.bf16_block_matmul is None and fallback.int8 is None
    assert not fallback.int4.is_native  # PyTorch's 4-bit kernel: AVX2-only CPUs
    float32 = EngineKernels.choose(EngineConfig(dtype="float32"), head_dim=64)
    assert float32.bf16_block_matmul is None


def test_int4_matmul_routes_bfloat16_through_the_native_kernel(kernel):
    groups = int4_groups(32, 64)
    native = Int4Matmul(torch.bfloat16, bf16_block_matmul=kernel)
    torch_kernel = Int4Matmul(torch.bfloat16)
    x = torch.randn(2, 64, generator=GEN).bfloat16()
    a, b = native(x, native.pack(groups)), torch_kernel(x, torch_kernel.pack(groups))
    assert isinstance(native.pack(groups), Bf16Int4Panels)
    torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)
