"""Model building blocks: prepacked linear layers compute what dense ones do."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from radixgen.runtime.model.layers import Linear, MergedLinear, can_prepack

pytestmark = pytest.mark.skipif(
    not can_prepack(torch.empty(1, dtype=torch.bfloat16)), reason="no oneDNN bfloat16 on this host"
)


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


def test_merged_linear_loads_shards_then_prepacks():
    layer = MergedLinear(16, [8, 4, 4], bias=False).to(torch.bfloat16)
    shards = [torch.randn(n, 16).to(torch.bfloat16) for n in (8, 4, 4)]
    for i, shard in enumerate(shards):
        layer.load_shard(i, shard)
    x = torch.randn(3, 16, dtype=torch.bfloat16)
    expected = torch.cat([F.linear(x, s) for s in shards], dim=-1)
    layer.prepack()
    assert torch.equal(layer(x), expected)


def test_float32_layers_stay_dense():
    layer = Linear(8, 8)
    layer.prepack()
    assert layer.packed is None and layer.weight.numel() == 64
