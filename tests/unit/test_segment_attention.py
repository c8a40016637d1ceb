"""The AMX segment kernel and its backend against float32 attention in torch.

Skipped where the kernel cannot run (no AMX, no C compiler). Sizes straddle the kernel's
blocking: 16-key score tiles, 32-key value blocks, 512-key chunks, 16-row tiles, 128-row items.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from radixgen.runtime.cache.kv_pool import KVPool
from radixgen.runtime.cache.req_table import ReqToTokenTable
from radixgen.runtime.config import EngineConfig
from radixgen.runtime.kernels.engine_kernels import EngineKernels
from radixgen.runtime.kernels.segment_attention import SegmentAttentionKernel, SegmentProblems
from radixgen.runtime.model import segment_attention
from radixgen.runtime.model.batch import ForwardBatch, ForwardMode
from radixgen.runtime.model.segment_attention import SegmentKernelBackend
from tests.unit.test_attention import tree_batch

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


def run_backend(kernel, requests):
    """The backend's output for a batch of (slots of every position, new tokens) requests."""
    max_len = max(len(s) for s, _ in requests)
    size = max(max(s) for s, _ in requests) + 1
    pool = KVPool(size, 1, HKV, D, torch.bfloat16)
    table = ReqToTokenTable(len(requests) + 1, max_len + 1)
    backend = SegmentKernelBackend(pool, table, HKV * G, HKV, kernel)
    gen = torch.Generator().manual_seed(0)
    pool.k[0].copy_(torch.randn(pool.k[0].shape, generator=gen))
    pool.v[0].copy_(torch.randn(pool.v[0].shape, generator=gen))
    for row, (slot_list, _) in enumerate(requests, start=1):
        table.write(row, 0, torch.tensor(slot_list))
    extend = torch.tensor([n for _, n in requests])
    new_slots = torch.cat([torch.tensor(s[len(s) - n :]) for s, n in requests])
    T = int(extend.sum())
    q = torch.randn(T, HKV * G * D, generator=gen).bfloat16()
    batch = ForwardBatch(
        ForwardMode.DECODE if bool((extend == 1).all()) else ForwardMode.EXTEND,
        torch.zeros(T, dtype=torch.int64),
        torch.cat([torch.arange(len(s) - n, len(s)) for s, n in requests]),
        new_slots,
        torch.arange(1, len(requests) + 1),
        torch.tensor([len(s) for s, _ in requests]),
        extend,
        torch.arange(T),
    )
    meta = backend.prepare(batch)
    k_new = pool.k[0, new_slots].reshape(T, -1).clone()  # written back unchanged
    v_new = pool.v[0, new_slots].reshape(T, -1).clone()
    return backend.forward(0, q, k_new, v_new, meta), q, pool, meta


def causal_reference(requests, q, pool):
    """Plain causal attention per request over its own gathered KV, float32."""
    outs, first = [], 0
    for slot_list, n in requests:
        k = pool.k[0, slot_list].float().repeat_interleave(G, dim=1).transpose(0, 1)  # [H, L, D]
        v = pool.v[0, slot_list].float().repeat_interleave(G, dim=1).transpose(0, 1)
        qr = q[first : first + n].float().view(n, HKV * G, D).transpose(0, 1)  # [H, n, D]
        L = len(slot_list)
        mask = torch.arange(L)[None, :] <= torch.arange(L - n, L)[:, None]  # [n, L]
        out = F.scaled_dot_product_attention(qr, k, v, attn_mask=mask)  # [H, n, D]
        outs.append(out.transpose(0, 1).reshape(n, -1))
        first += n
    return torch.cat(outs)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decode", [True, False])
def test_backend_over_a_prefix_tree_matches_per_request_attention(
    segment_kernel, seed, decode, monkeypatch
):
    monkeypatch.setattr(segment_attention, "MIN_SEGMENT_SAVING", 0)  # every prefix >= 16 tokens
    requests = tree_batch(random.Random(seed), decode)
    out, q, pool, meta = run_backend(segment_kernel, requests)
    if len(requests) > 1:
        assert meta.shared_levels, "a batch with shared prefixes found none"
    expected = causal_reference(requests, q, pool)
    torch.testing.assert_close(out.float(), expected, rtol=0.02, atol=0.02)


def test_a_fresh_prompt_is_one_causal_problem(segment_kernel):
    requests = [(list(range(1, 601)), 600)]  # crosses the 512-key chunk
    out, q, pool, meta = run_backend(segment_kernel, requests)
    assert meta.shared_levels == () and meta.own.limits.tolist() == list(range(1, 601))
    torch.testing.assert_close(
        out.float(), causal_reference(requests, q, pool), rtol=0.02, atol=0.02
    )
