"""8-bit output head: GGUF's Q8_0 blocks read as stored and multiplied by the native kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from radixgen.runtime.kernels.block_matmul import GROUP_SIZE, BlockMatmulKernel, Int8Blocks
from radixgen.runtime.model.loader import default_model_path
from radixgen.runtime.model.loader.gguf_loader import (
    _q8_0_blocks,
    iter_gguf_int8,
    iter_gguf_weights,
    read_gguf_config,
)


@pytest.fixture
def block_matmul(native_kernels) -> BlockMatmulKernel:
    if native_kernels.block_matmul is None:
        pytest.skip("no C compiler (or no AVX2) for the native block kernel")
    return native_kernels.block_matmul


def random_blocks(rng: torch.Generator, n: int, k: int) -> Int8Blocks:
    return Int8Blocks(
        torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=rng),
        torch.rand(n, k // GROUP_SIZE, generator=rng) * 0.01,
    )


def test_q8_0_blocks_follow_ggml_layout():
    """Hand-built blocks: a float16 scale, then 32 signed codes in element order."""
    codes = np.arange(-16, 16, dtype=np.int8)

    def block(scale: float, block_codes: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [np.frombuffer(np.float16(scale).tobytes(), np.uint8), block_codes.view(np.uint8)]
        )

    raw = np.stack([np.concatenate([block(0.25, codes), block(-2.0, codes[::-1])])])  # 1 x 68
    got_codes, scales = _q8_0_blocks(raw)
    assert got_codes.dtype == np.int8 and got_codes.shape == (1, 64)
    np.testing.assert_array_equal(got_codes[0], np.concatenate([codes, codes[::-1]]))
    np.testing.assert_array_equal(scales, [[0.25, -2.0]])


def test_default_model_head_blocks_equal_the_dequantized_embedding():
    """The file's one Q8_0 tensor is the (tied) embedding; as blocks it equals `gguf`'s own
    dequantization exactly (a code times a float16 scale is exact in float32)."""
    path = default_model_path()
    config = read_gguf_config(path)
    blocks = dict(iter_gguf_int8(path, config))
    assert list(blocks) == ["model.embed_tokens.weight"]
    dense = next(t for name, t in iter_gguf_weights(path, config) if name in blocks)
    assert torch.equal(blocks["model.embed_tokens.weight"].dequantize(), dense)


# 1-4 rows decode in registers; more go through panels in tiles of 6 rows (and a partial one)
@pytest.mark.parametrize("rows", [1, 2, 4, 5, 16, 37])
def test_int8_kernel_matches_the_dense_product_to_float32_rounding(rows, block_matmul):
    rng = torch.Generator().manual_seed(rows)
    blocks = random_blocks(rng, 50, 576)  # 50 columns pad to 64; 576 inputs span 2 slices
    x = torch.randn(rows, 576, generator=rng)
    out = block_matmul.int8(x, blocks.panels())
    assert out.shape == (rows, 50)
    # sums of 576 products of size ~1: float32 rounding reaches ~1e-5; a misplaced weight ~1
    torch.testing.assert_close(out, x @ blocks.dequantize().T, rtol=1e-5, atol=1e-4)


def test_int8_kernel_refuses_what_it_cannot_serve(block_matmul):
    blocks = random_blocks(torch.Generator().manual_seed(0), 8, 64).panels()
    with pytest.raises(ValueError, match="does not fit"):
        block_matmul.int8(torch.zeros(1, 32), blocks)
    with pytest.raises(ValueError, match="float32"):
        block_matmul.int8(torch.zeros(1, 64, dtype=torch.bfloat16), blocks)


def test_float32_engine_head_uses_its_8_bit_blocks_for_narrow_passes(engine, block_matmul):
    """The session engine (float32) multiplies decode steps' rows by the Q8_0 head; its logits
    agree with the dense tied head to float32 rounding."""
    model = engine.scheduler.runner.model
    assert model.int8_head is not None and model.int8_head_max_tokens >= 5
    x = F.rms_norm(
        torch.randn(5, model.config.hidden_size, generator=torch.Generator().manual_seed(0)),
        (model.config.hidden_size,),
    )
    expected = F.linear(x, model.embed_tokens.weight)  # [5, vocab]
    torch.testing.assert_close(model.logits(x), expected, rtol=1e-4, atol=1e-4)


def test_no_rows_give_an_empty_product(block_matmul):
    """A prefill chunk that ends no request asks the head for zero rows of logits."""
    blocks = random_blocks(torch.Generator().manual_seed(0), 8, 64).panels()
    assert block_matmul.int8(torch.zeros(0, 64), blocks).shape == (0, 8)
