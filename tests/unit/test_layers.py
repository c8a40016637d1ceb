"""Model building blocks: prepacked linear layers compute what dense ones do."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from radixgen.runtime.model.layers import Linear, MergedLinear, can_prepack

needs_onednn_bfloat16 = pytest.mark.skipif(
    not can_prepack(torch.empty(1, dtype=torch.bfloat16)), reason="no oneDNN bfloat16 on this host"
)


@needs_onednn_bfloat16
@pytest.mark.parametrize("rows", [1, 7, 64, 300])
@pytest.mark.parametrize("bias", [False, True])
def test_prepacked_linear_equals_dense(rows, bias):
    torch.manual_seed(rows)
    layer = Linear(96, 80, bias=bias).to(torch.bfloat16)
    x = torch.randn(rows, 96, dtype=torch.bfloat16)
    dense = F.linear(x, layer.weight, layer.bias)
    layer.prepack()
    assert layer.packed is not None and layer.weight.numel() == 0  # weights are not held twice
    out = layer(x)
    if bias:  # the fused kernel adds the bias before rounding to bfloat16: one rounding apart
        torch.testing.assert_close(out, dense, rtol=2**-7, atol=2**-8)
    else:
        assert torch.equal(out, dense)


@needs_onednn_bfloat16
def test_merged_linear_loads_shards_then_prepacks():
    layer = MergedLinear(16, [8, 4, 4], bias=False).to(torch.bfloat16)
    shards = [torch.randn(n, 16).to(torch.bfloat16) for n in (8, 4, 4)]
    for i, shard in enumerate(shards):
        layer.load_shard(i, shard)
    x = torch.randn(3, 16, dtype=torch.bfloat16)
    expected = torch.cat([F.linear(x, s) for s in shards], dim=-1)
    layer.prepack()
    assert torch.equal(layer(x), expected)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN")
@pytest.mark.parametrize("rows", [1, 8, 60, 300])
def test_prepacked_float32_linear_matches_dense_to_float32_rounding(rows):
    """oneDNN's float32 kernel sums in another order than the dense GEMM: equal to within a
    few float32 roundings, not bit for bit."""
    torch.manual_seed(rows)
    layer = MergedLinear(576, [576, 192, 192], bias=True)
    x = torch.randn(rows, 576)
    dense = layer(x)
    layer.prepack()
    assert layer.packed is not None and layer.weight.numel() == 0
    torch.testing.assert_close(layer(x), dense, rtol=1e-5, atol=1e-5)


def test_layers_off_the_cpu_stay_dense():
    layer = Linear(8, 8, device="meta")
    layer.prepack()
    assert layer.packed is None and layer.weight.numel() == 64
