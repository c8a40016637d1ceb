"""The AMX segment kernel against float32 attention in torch (its executor: test_attention_plan).

Skipped where the kernel cannot run (no AMX, no C compiler). Sizes straddle the kernel's
blocking: 16-key score tiles, 32-key value blocks, 512-key chunks, 16-row tiles, 128-row items.
"""

from __future__ import annotations

import pytest
import torch

from radixgen.runtime.config import EngineConfig
from radixgen.runtime.kernels.engine_kernels import EngineKernels
from radixgen.runtime.kernels.segment_attention import SegmentAttentionKernel, SegmentProblems

HKV, G, D = 3, 3, 64  # SmolLM2's attention: 9 query heads over 3 KV heads


@pytest.fixture(scope="module")
def segment_kernel() -> SegmentAttentionKernel:
    found = EngineKernels.choose(EngineConfig(dtype="bfloat16"), head_dim=D).segment_attention
    if found is None:
        pytest.skip("the AMX segment kernel does not run here")
    return found


def reference(q, k_buf, v_buf, tokens, slots, limits=None):
    """Per problem and token: softmax(q k^T / sqrt(D)) v over its visible slots, float32."""
    T = q.shape[0]
    out = torch.zeros(T, HKV, G, D)
    lse = torch.full((T, HKV, G), -1e30)
    for p, (toks, keys) in enumerate(zip(tokens, slots, strict=True)):
        k = k_buf[keys].float().transpose(0, 1)  # [HKV, n, D]
        v = v_buf[keys].float().transpose(0, 1)
        for i, t in enumerate(toks.tolist()):
            n = len(keys) if limits is None else int(limits[p][i])
            if n == 0:
                continue
            scores = q[t].float().view(HKV, G, D) @ k[:, :n].transpose(1, 2) * D**-0.5
            out[t] = torch.softmax(scores, -1) @ v[:, :n]
            lse[t] = torch.logsumexp(scores, -1)
    return out, lse


def random_pool(size: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    k_buf = torch.randn(size, HKV, D, generator=gen).bfloat16()
    v_buf = torch.randn(size, HKV, D, generator=gen).bfloat16()
    return k_buf, v_buf, gen


@pytest.mark.parametrize("causal", [False, True])
def test_problems_match_float32_attention(segment_kernel, causal):
    k_buf, v_buf, gen = random_pool(4000, 1)
    T = 60
    q = (torch.randn(T, HKV * G * D, generator=gen) * 3).bfloat16()  # peaked softmaxes too
    order = torch.randperm(T, generator=gen)
    tokens = [order[:45], order[45:46], order[46:60]]  # 135 rows: two work items
    slots = [torch.randint(0, 4000, (n,), generator=gen) for n in (1100, 33, 15)]
    limits = None
    if causal:  # first token sees nothing; others straddle tiles, blocks and the 512-key chunk
        limits = [torch.randint(0, 1101, (45,), generator=gen), torch.tensor([33])]
        limits[0][0] = 0
        limits.append(torch.arange(1, 15))
        tokens[2] = tokens[2][:14]
    problems = SegmentProblems.build(tokens, slots, limits)
    out = torch.full((T, HKV, G, D), float("nan"))
    lse = torch.full((T, HKV, G), float("nan"))
    segment_kernel(q, k_buf, v_buf, problems, out, lse)
    ref_out, ref_lse = reference(q, k_buf, v_buf, tokens, slots, limits)
    covered = torch.cat(tokens)
    # P is rounded to bfloat16 before P.V, as in PyTorch's bfloat16 flash kernel.
    torch.testing.assert_close(out[covered], ref_out[covered], rtol=0.02, atol=0.01)
    torch.testing.assert_close(lse[covered], ref_lse[covered], rtol=1e-5, atol=1e-4)
    if causal:
        first = tokens[0][0]
        assert bool((out[first] == 0).all()) and float(lse[first].max()) < -1e29


def test_accumulating_a_second_segment_equals_one_problem(segment_kernel):
    k_buf, v_buf, gen = random_pool(2000, 2)
    T = 20
    q = torch.randn(T, HKV * G * D, generator=gen).bfloat16()
    keys = torch.randperm(2000, generator=gen)[:700]
    every = torch.arange(T)
    out = torch.empty(T, HKV, G, D)
    lse = torch.empty(T, HKV, G)
    segment_kernel(q, k_buf, v_buf, SegmentProblems.build([every], [keys[:300]]), out, lse)
    later = SegmentProblems.build([every[:12]], [keys[300:]])  # only some tokens see the rest
    segment_kernel(q, k_buf, v_buf, later, out, lse, accumulate=True)
    ref_out, ref_lse = reference(q, k_buf, v_buf, [every[:12], every[12:]], [keys, keys[:300]])
    torch.testing.assert_close(out, ref_out, rtol=0.02, atol=0.01)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-4)


def test_reads_query_rows_in_place_from_a_fused_projection(segment_kernel):
    """q may be the query columns of a fused QKV output (rows strided): same result, bit for bit,
    as the contiguous copy."""
    k_buf, v_buf, gen = random_pool(500, 3)
    T = 24
    qkv = torch.randn(T, (HKV * G + 2 * HKV) * D, generator=gen).bfloat16()
    q = qkv[:, : HKV * G * D]  # [T, H * D], row stride (H + 2 * Hkv) * D
    problems = SegmentProblems.build([torch.arange(T)], [torch.randperm(500, generator=gen)[:90]])
    outs = []
    for query in (q, q.contiguous()):
        out, lse = torch.empty(T, HKV, G, D), torch.empty(T, HKV, G)
        segment_kernel(query, k_buf, v_buf, problems, out, lse)
        outs.append((out, lse))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_rejects_what_it_cannot_read(segment_kernel):
    k_buf = torch.randn(10, HKV, D)
    problems = SegmentProblems.build([torch.arange(1)], [torch.arange(3)])
    with pytest.raises(ValueError, match="bfloat16"):
        segment_kernel(
            torch.randn(1, HKV * G * D), k_buf, k_buf, problems, torch.empty(1), torch.empty(1)
        )
    k_buf = k_buf.bfloat16()
    with pytest.raises(ValueError, match="contiguous"):
        segment_kernel(
            torch.randn(HKV * G * D, 2).bfloat16().t()[:1],  # columns 2 elements apart
            k_buf,
            k_buf,
            problems,
            torch.empty(1, HKV, G, D),
            torch.empty(1, HKV, G),
        )
