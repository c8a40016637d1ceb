"""4-bit weights: the GGUF blocks are read as stored, and the int4 kernel multiplies by them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radixgen.runtime.kernels.block_matmul import GROUP_SIZE, BlockMatmulKernel, Int4Panels
from radixgen.runtime.kernels.int4 import Int4Groups, Int4Matmul
from radixgen.runtime.model.layers import Linear, MergedLinear
from radixgen.runtime.model.loader import default_model_path
from radixgen.runtime.model.loader.gguf_loader import (
    _q4_blocks,
    iter_gguf_int4,
    iter_gguf_weights,
    read_gguf_config,
)

BFLOAT16 = Int4Matmul(torch.bfloat16)  # PyTorch's kernel: no native code involved


def random_groups(rng: torch.Generator, n: int, k: int) -> Int4Groups:
    return Int4Groups(
        torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=rng),
        torch.rand(n, k // GROUP_SIZE, generator=rng) * 0.05,
        torch.randn(n, k // GROUP_SIZE, generator=rng) * 0.05,
    )


def test_q4_blocks_follow_ggml_layout():
    """Hand-built Q4_0 and Q4_1 blocks: scale, minimum, low nibbles first, then high nibbles."""
    codes = np.arange(32, dtype=np.uint8) % 16  # element j has code j % 16
    nibbles = (codes[:16] | (codes[16:] << 4)).astype(np.uint8)
    d, m = np.float16(0.5), np.float16(-2.0)
    q4_1 = np.concatenate([np.frombuffer(d.tobytes() + m.tobytes(), np.uint8), nibbles])[None]
    got_codes, scales, zeros = _q4_blocks(q4_1, has_min=True)
    weights = (got_codes.astype(np.float32) - 8) * scales + zeros
    np.testing.assert_array_equal(weights[0], 0.5 * codes - 2.0)
    q4_0 = np.concatenate([np.frombuffer(d.tobytes(), np.uint8), nibbles])[None]
    got_codes, scales, zeros = _q4_blocks(q4_0, has_min=False)
    weights = (got_codes.astype(np.float32) - 8) * scales + zeros
    np.testing.assert_array_equal(weights[0], 0.5 * (codes.astype(np.float32) - 8))


def test_default_model_int4_groups_equal_dequantized_weights():
    """Every Q4_1 tensor of the real file, as groups, equals `gguf`'s own dequantization
    (including the undone q/k row permutation)."""
    path = default_model_path()
    config = read_gguf_config(path)
    groups = dict(iter_gguf_int4(path, config))
    assert len(groups) == 7 * config.num_layers  # q, k, v, o, gate, up, down of every layer
    for name, dense in iter_gguf_weights(path, config):
        if name in groups:
            assert torch.equal(groups[name].dequantize(), dense), name


@pytest.mark.parametrize("rows", [1, 5, 16, 37])  # register tiles of 2 rows, and a partial one
@pytest.mark.parametrize("bias", [False, True])
def test_int4_linear_matches_dequantized_dense(rows, bias):
    rng = torch.Generator().manual_seed(rows)
    groups = random_groups(rng, 48, 64)
    layer = Linear(64, 48, bias=bias).to(torch.bfloat16)
    layer.weight.data.copy_(groups.dequantize())
    x = torch.randn(rows, 64, generator=rng).to(torch.bfloat16)
    dense = layer(x).float()
    layer.use_int4([groups], max_tokens=16, matmul=BFLOAT16)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    # scales and zeros are rounded to bfloat16; the dense weights are rounded per element
    torch.testing.assert_close(out.float(), dense, rtol=0.02, atol=0.02)


def test_wide_inputs_keep_the_bfloat16_weights():
    rng = torch.Generator().manual_seed(0)
    groups = random_groups(rng, 32, 64)
    layer = Linear(64, 32, bias=False).to(torch.bfloat16)
    layer.weight.data.copy_(groups.dequantize())
    x = torch.randn(9, 64, generator=rng).to(torch.bfloat16)
    dense = layer(x)
    layer.use_int4([groups], max_tokens=8, matmul=BFLOAT16)
    assert torch.equal(layer(x), dense)  # 9 rows > 8: the int4 kernel is not used
    assert not torch.equal(layer(x[:8]), dense[:8])  # 8 rows: it is (rounded differently)


def test_merged_int4_shards_stack_in_output_order():
    rng = torch.Generator().manual_seed(1)
    parts = [random_groups(rng, n, 64) for n in (32, 16, 16)]
    layer = MergedLinear(64, [32, 16, 16], bias=False).to(torch.bfloat16)
    layer.use_int4(parts, max_tokens=4, matmul=BFLOAT16)
    x = torch.randn(2, 64, generator=rng).to(torch.bfloat16)
    expected = torch.cat([x.float() @ p.dequantize().T for p in parts], dim=-1)
    torch.testing.assert_close(layer(x).float(), expected, rtol=0.02, atol=0.02)
    with pytest.raises(ValueError, match="does not fit"):
        layer.use_int4(parts[:2], max_tokens=4, matmul=BFLOAT16)


@pytest.fixture
def block_matmul(native_kernels) -> BlockMatmulKernel:
    if native_kernels.block_matmul is None:
        pytest.skip("no C compiler (or no AVX2) for the native block kernel")
    return native_kernels.block_matmul


# 1-4 rows decode in registers; more go through panels in tiles of 6 rows (and a partial one)
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 16, 37])
@pytest.mark.parametrize("bias", [False, True])
def test_float32_int4_kernel_matches_dequantized_dense_to_float32_rounding(
    rows, bias, block_matmul
):
    """The native float32 kernel multiplies by exactly the dequantized weights: only the
    summation order (and one fused rounding per weight) differs from the dense GEMM."""
    rng = torch.Generator().manual_seed(rows)
    groups = random_groups(rng, 50, 576)  # 50 columns pad to 64; 576 inputs span 2 slices
    layer = Linear(576, 50, bias=bias)
    layer.weight.data.copy_(groups.dequantize())
    x = torch.randn(rows, 576, generator=rng)
    dense = layer(x)
    layer.use_int4([groups], max_tokens=64, matmul=Int4Matmul(torch.float32, block_matmul))
    out = layer(x)
    assert out.dtype == torch.float32 and out.shape == (rows, 50)
    # sums of 576 products: float32 rounding reaches ~1e-5; a misplaced weight would be ~0.1
    torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-4)


def test_float32_int4_panels_interleave_eight_columns(native_kernels):
    """Word (b, p, i) holds the codes of column 8b + i at inputs 8p .. 8p + 7, one nibble
    each (input 8p + j in bits 4j .. 4j + 3); scales and zeros interleave the same columns."""
    codes = (torch.arange(16 * 64) % 16).to(torch.uint8).reshape(16, 64)
    scales = torch.arange(16 * 2, dtype=torch.float32).reshape(16, 2)
    packed = Int4Panels.pack(codes, scales, torch.zeros(16, 2))
    assert packed.codes.shape == (2, 8, 8) and packed.cols == 16
    word = int(packed.codes[1, 3, 2]) & 0xFFFFFFFF  # column 10, inputs 24..31
    assert [(word >> (4 * j)) & 15 for j in range(8)] == [int(codes[10, 24 + j]) for j in range(8)]
    assert packed.scales[1, 1, 2].item() == scales[10, 1].item()
    x = torch.zeros(1, 64)
    x[0, 17] = 1.0  # picks input 17 of every column: (code 1 - 8) * scale + 0
    if native_kernels.block_matmul is None:
        pytest.skip("no C compiler (or no AVX2) for the native block kernel")
    expected = (codes[:, 17].float() - 8) * scales[:, 0]
    assert torch.equal(native_kernels.block_matmul.int4(x, packed)[0], expected)


def test_float32_int4_kernel_refuses_what_it_cannot_serve(block_matmul):
    rng = torch.Generator().manual_seed(0)
    g = random_groups(rng, 8, 64)
    packed = Int4Panels.pack(g.codes, g.scales, g.zeros)
    assert block_matmul.int4(torch.zeros(0, 64), packed).shape == (0, 8)
    with pytest.raises(ValueError, match="does not fit"):
        block_matmul.int4(torch.zeros(1, 32), packed)
    with pytest.raises(ValueError, match="float32"):
        block_matmul.int4(torch.zeros(1, 64, dtype=torch.bfloat16), packed)
