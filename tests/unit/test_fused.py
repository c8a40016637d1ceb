"""The fused native element-wise kernels compute what the torch chains they replace compute."""

from __future__ import annotations

import pytest
import torch

from radixgen.runtime.kernels.elementwise import FusedOps

TORCH = FusedOps(None)  # every method runs its torch chain


@pytest.fixture(scope="module")
def native(native_kernels) -> FusedOps:
    ops = native_kernels.elementwise
    if not ops.is_native:
        pytest.skip("no C compiler for the native kernels")
    return ops


def assert_within_one_rounding(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal but for rare last-bit differences (reordered float32 sums, vectorized expf) in an
    intermediate, which the next rounding can carry to two bfloat16 steps (2 * 2^-7)."""
    torch.testing.assert_close(actual, expected, rtol=2**-6, atol=1e-6)
    assert (actual != expected).float().mean().item() < 0.01


# 200 rows of 576 cross the kernels' threshold for running on the thread pool
@pytest.mark.parametrize(("rows", "dim"), [(1, 576), (7, 100), (200, 576)])
def test_add_rms_norm_matches_the_torch_chain(native, rows, dim):
    torch.manual_seed(rows)
    x = torch.randn(rows, dim, dtype=torch.bfloat16) * 3
    delta = torch.randn(rows, dim, dtype=torch.bfloat16)
    weight = torch.rand(dim, dtype=torch.bfloat16) + 0.5
    normed, total = native.add_rms_norm(x, delta, weight, 1e-5)
    expected_normed, expected_total = TORCH.add_rms_norm(x, delta, weight, 1e-5)
    assert torch.equal(total, expected_total)  # the residual stream is exact
    assert_within_one_rounding(normed, expected_normed)
    alone, same = native.add_rms_norm(x, None, weight, 1e-5)
    assert same is x
    assert_within_one_rounding(alone, TORCH.add_rms_norm(x, None, weight, 1e-5)[0])


@pytest.mark.parametrize("rows", [1, 3, 64])
def test_silu_mul_matches_the_torch_chain(native, rows):
    torch.manual_seed(rows)
    gate_up = torch.randn(rows, 2 * 1536, dtype=torch.bfloat16) * 4
    out = native.silu_mul(gate_up)
    assert out.shape == (rows, 1536)
    assert_within_one_rounding(out, TORCH.silu_mul(gate_up))


@pytest.mark.parametrize("rows", [1, 5, 300])
def test_rotary_in_place_is_exact_on_a_column_slice(native, rows):
    torch.manual_seed(rows)
    qkv = torch.randn(rows, 15 * 64, dtype=torch.bfloat16)  # q|k: 12 heads, v: 3 heads after
    angles = torch.rand(rows, 1, 32) * 6
    cos = torch.cat((angles.cos(), angles.cos()), -1).to(torch.bfloat16)
    sin = torch.cat((angles.sin(), angles.sin()), -1).to(torch.bfloat16)
    expected = qkv.clone()
    TORCH.rotary_(expected[:, : 12 * 64].view(rows, 12, 64), cos, sin)
    before = qkv.clone()
    native.rotary_(qkv[:, : 12 * 64].view(rows, 12, 64), cos, sin)
    assert torch.equal(qkv, expected)
    assert torch.equal(qkv[:, 12 * 64 :], before[:, 12 * 64 :])  # v untouched
    assert not torch.equal(qkv, before)


def test_float32_variants_match_the_torch_chain_to_float32_rounding(native):
    """float32 rows take the kernels' float32 variants: nothing rounded between steps."""
    torch.manual_seed(0)
    x, delta = torch.randn(200, 576) * 3, torch.randn(200, 576)
    weight = torch.rand(576) + 0.5
    normed, total = native.add_rms_norm(x, delta, weight, 1e-5)
    expected_normed, expected_total = TORCH.add_rms_norm(x, delta, weight, 1e-5)
    assert torch.equal(total, expected_total)  # one float32 add, as torch does it
    torch.testing.assert_close(normed, expected_normed, rtol=1e-5, atol=1e-6)
    alone, same = native.add_rms_norm(x[:1], None, weight, 1e-5)
    assert torch.equal(same, x[:1])
    torch.testing.assert_close(alone, TORCH.add_rms_norm(x[:1], None, weight, 1e-5)[0])
    gate_up = torch.randn(3, 2 * 1536) * 4
    torch.testing.assert_close(native.silu_mul(gate_up), TORCH.silu_mul(gate_up))
    qkv = torch.randn(5, 15 * 64)
    angles = torch.rand(5, 1, 32) * 6
    cos, sin = torch.cat((angles.cos(),) * 2, -1), torch.cat((angles.sin(),) * 2, -1)
    expected = qkv.clone()
    TORCH.rotary_(expected[:, : 12 * 64].view(5, 12, 64), cos, sin)
    native.rotary_(qkv[:, : 12 * 64].view(5, 12, 64), cos, sin)
    torch.testing.assert_close(qkv, expected)
    assert torch.equal(qkv[:, 12 * 64 :], expected[:, 12 * 64 :])  # v untouched


def test_other_dtypes_take_the_torch_chain(native):
    x = torch.randn(4, 32, dtype=torch.float64)
    weight = torch.rand(32, dtype=torch.float64)
    normed, total = native.add_rms_norm(x, x, weight, 1e-6)
    assert normed.dtype == torch.float64
    assert torch.equal(total, x + x)
    expected = weight * torch.rms_norm(x + x, (32,), eps=1e-6)
    torch.testing.assert_close(normed, expected)
