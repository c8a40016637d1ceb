"""The native pool attention kernel (kernels/decode_attention.c) against float32 attention in
torch: decode steps (a token per request) and extends (blocks of a request's new tokens)."""

from __future__ import annotations

import pytest
import torch

from radixgen.runtime.config import EngineConfig
from radixgen.runtime.kernels.engine_kernels import EngineKernels


def reference(q, k_buf, v_buf, slots, lens, kv_heads):
    """Per request: softmax(q k^T / sqrt(D)) v over its slots, float32; (out, lse) per head."""
    B, D = slots.shape[0], k_buf.shape[-1]
    group = q.shape[1] // (kv_heads * D)
    outs, lses = [], []
    for b in range(B):
        rows = slots[b, : int(lens[b])]
        k = k_buf[rows].float().transpose(0, 1)  # [Hkv, n, D]
        v = v_buf[rows].float().transpose(0, 1)
        query = q[b].float().view(kv_heads, group, D)
        scores = query @ k.transpose(1, 2) * D**-0.5  # [Hkv, G, n]
        outs.append(torch.softmax(scores, -1) @ v)
        lses.append(torch.logsumexp(scores, -1))
    return torch.stack(outs), torch.stack(lses)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(
    ("kv_heads", "group", "head_dim"),
    # 64 and 128 have unrolled variants; 20 is no multiple of 8 (the plain loops)
    [(3, 3, 64), (2, 4, 128), (1, 1, 48), (4, 2, 16), (1, 2, 20)],
)
def test_matches_float32_attention_over_scattered_slots(kernel, kv_heads, group, head_dim, dtype):
    gen = torch.Generator().manual_seed(head_dim)
    pool_size, batch = 3000, 7
    k_buf = torch.randn(pool_size, kv_heads, head_dim, generator=gen).to(dtype)
    v_buf = torch.randn(pool_size, kv_heads, head_dim, generator=gen).to(dtype)
    # Lengths straddle the 64-key blocks; slots are scattered and may repeat across requests.
    lens = torch.tensor([1, 63, 64, 65, 200, 7, 129])
    slots = torch.randint(0, pool_size, (batch, int(lens.max())), generator=gen)
    q = torch.randn(batch, kv_heads * group * head_dim, generator=gen).to(dtype)
    out, lse = kernel(q, k_buf, v_buf, slots, lens)
    ref_out, ref_lse = reference(q, k_buf, v_buf, slots, lens, kv_heads)
    assert out.shape == (batch, kv_heads, group, head_dim) and lse.shape == (batch, kv_heads, group)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_request_without_keys_gets_no_weight(kernel, dtype):
    k_buf = torch.randn(10, 1, 64).to(dtype)
    q = torch.randn(2, 64).to(dtype)
    slots = torch.tensor([[3, 4], [0, 0]])
    out, lse = kernel(q, k_buf, k_buf, slots, torch.tensor([2, 0]))
    assert bool((out[1] == 0).all()) and float(lse[1].max()) < -1e29
    assert bool(torch.isfinite(out).all())


def test_rejects_what_it_cannot_read(kernel):
    k_buf = torch.randn(10, 1, 64)
    one_slot = torch.zeros(1, 1, dtype=torch.int64), torch.ones(1, dtype=torch.int64)
    with pytest.raises(ValueError, match="decode_attention: q must be bfloat16 or float32"):
        kernel(torch.randn(1, 64).half(), k_buf.half(), k_buf.half(), *one_slot)
    with pytest.raises(ValueError, match="k must have the dtype of q"):  # mixed dtypes
        kernel(torch.randn(1, 64).bfloat16(), k_buf, k_buf, *one_slot)
    with pytest.raises(ValueError, match="v must be contiguous"):  # a pool is never copied
        kernel(torch.randn(1, 64), k_buf, torch.randn(20, 1, 64)[::2], *one_slot)


def test_many_query_rows_per_kv_head_share_one_read(kernel):
    """A shared prefix as one "request": the queries of 6 requests x 3 heads (18 rows per KV
    head) against the prefix's slots."""
    gen = torch.Generator().manual_seed(7)
    k_buf, v_buf = torch.randn(2, 500, 3, 64, generator=gen)
    q = torch.randn(1, 3 * 18 * 64, generator=gen)
    slots = torch.randperm(500, generator=gen)[None, :130]
    lens = torch.tensor([130])
    out, lse = kernel(q, k_buf, v_buf, slots, lens)
    ref_out, ref_lse = reference(q, k_buf, v_buf, slots, lens, 3)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kv_heads", "group", "head_dim"), [(3, 3, 64), (2, 5, 32)])
def test_a_decode_token_alone_matches_it_in_a_wide_batch(kernel, kv_heads, group, head_dim):
    """float32 decode items take all KV heads of a token at once when the batch has tokens enough
    for every thread, one head each otherwise; group 5 runs query-row passes of 3 and 2."""
    gen = torch.Generator().manual_seed(group)
    k_buf, v_buf = torch.randn(2, 2000, kv_heads, head_dim, generator=gen)
    lens = torch.randint(1, 300, (9,), generator=gen)
    slots = torch.randint(0, 2000, (9, 300), generator=gen)
    q = torch.randn(9, kv_heads * group * head_dim, generator=gen)
    out, lse = kernel(q, k_buf, v_buf, slots, lens)
    for t in range(9):
        alone_out, alone_lse = kernel(q[t : t + 1], k_buf, v_buf, slots[t : t + 1], lens[t : t + 1])
        torch.testing.assert_close(alone_out[0], out[t], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(alone_lse[0], lse[t], rtol=1e-6, atol=1e-6)
    ref_out, ref_lse = reference(q, k_buf, v_buf, slots, lens, kv_heads)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)


def fork_rows(gen, pool_size, programs):
    """Slot rows of decode tokens that fork from shared prefixes: `programs` is a list of
    (prefix length, [own lengths of its forks]); a fork's own slots are fresh."""
    free = torch.randperm(pool_size, generator=gen)
    used, rows = 0, []
    for prefix_len, own_lens in programs:
        prefix, used = free[used : used + prefix_len], used + prefix_len
        for own_len in own_lens:
            rows.append(torch.cat([prefix, free[used : used + own_len]]))
            used += own_len
    lens = torch.tensor([len(row) for row in rows])
    slots = torch.zeros(len(rows), int(lens.max()), dtype=torch.int64)
    for b, row in enumerate(rows):
        slots[b, : len(row)] = row
    return slots, lens


@pytest.mark.parametrize(
    ("programs", "twin_own"),
    [
        # judge-like: forks over one article each, own parts straddling key blocks
        ([(650, [12, 30, 64, 65, 1]), (200, [3, 3, 3]), (64, [0, 20])], 0),
        # more forks than a group takes; a fork with no own keys; a lone request between
        ([(130, [5] * 20), (90, [7]), (300, [0, 129, 2, 2, 40, 1])], 0),
        # forks 0-1 share their first 40 own slots too: more than with the rest of the program
        ([(100, [80, 80, 81]), (63, [10, 10])], 40),
        # too few tokens to give every thread two groups: one KV head per item
        ([(400, [9, 17, 33])], 0),
    ],
)
def test_forks_sharing_a_prefix_match_attention_per_fork(kernel, programs, twin_own):
    """float32 decode tokens whose rows share a prefix run as fork groups (the prefix's K/V
    read once for all of them, then each fork's own keys): the same as each fork alone."""
    gen = torch.Generator().manual_seed(len(programs))
    k_buf, v_buf = torch.randn(2, 6000, 3, 64, generator=gen)
    slots, lens = fork_rows(gen, 6000, programs)
    prefix_len = programs[0][0]
    own = slice(prefix_len, prefix_len + twin_own)
    slots[1, own] = slots[0, own]
    T = len(lens)
    q = torch.randn(T, 3 * 3 * 64, generator=gen)
    out, lse = kernel(q, k_buf, v_buf, slots, lens)
    ref_out, ref_lse = reference(q, k_buf, v_buf, slots, lens, 3)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)
    for t in range(T):
        alone_out, alone_lse = kernel(q[t : t + 1], k_buf, v_buf, slots[t : t + 1], lens[t : t + 1])
        torch.testing.assert_close(alone_out[0], out[t], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(alone_lse[0], lse[t], rtol=1e-6, atol=1e-6)
    # The same tokens reading their rows through token_rows (rows listed in another order).
    order = torch.randperm(T, generator=gen)
    shuffled = torch.empty_like(slots)
    shuffled[order] = slots
    rows_out, rows_lse = kernel(q, k_buf, v_buf, shuffled, lens, order)
    torch.testing.assert_close(rows_out, out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rows_lse, lse, rtol=1e-6, atol=1e-6)


def extend_reference(q, k_buf, v_buf, slots, lens, token_rows, kv_heads):
    """Per token: softmax(q k^T / sqrt(D)) v over the first lens[t] slots of its row."""
    per_token_slots = slots[token_rows]  # [T, L]
    return reference(q, k_buf, v_buf, per_token_slots, lens, kv_heads)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(
    ("kv_heads", "group", "head_dim"),
    # float32 blocks of >= 12 query rows run register-tiled (head_dim a multiple of 16: 64 and
    # 128 unrolled, 48 generic); 20 takes the row-by-row loops; group 1 pads 16-row tiles
    [(3, 3, 64), (2, 4, 128), (1, 3, 48), (2, 1, 16), (1, 2, 20)],
)
def test_extends_match_causal_attention_per_token(kernel, kv_heads, group, head_dim, dtype):
    """Requests extended by 1-40 tokens (blocks of up to 16 computed together, the last one
    partial), each new token over its request's KV up to itself; rows interleave in the pool."""
    gen = torch.Generator().manual_seed(head_dim + group)
    pool_size = 4000
    k_buf = torch.randn(pool_size, kv_heads, head_dim, generator=gen).to(dtype)
    v_buf = torch.randn(pool_size, kv_heads, head_dim, generator=gen).to(dtype)
    cached, extends = [0, 63, 5, 130, 17], [40, 1, 16, 33, 7]
    slots = torch.randint(0, pool_size, (len(cached), max(cached) + max(extends)), generator=gen)
    token_rows = torch.cat([torch.full((e,), r) for r, e in enumerate(extends)])
    lens = torch.cat([torch.arange(c + 1, c + e + 1) for c, e in zip(cached, extends, strict=True)])
    q = torch.randn(len(lens), kv_heads * group * head_dim, generator=gen).to(dtype)
    out, lse = kernel(q, k_buf, v_buf, slots, lens, token_rows)
    ref_out, ref_lse = extend_reference(q, k_buf, v_buf, slots, lens, token_rows, kv_heads)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kv_heads", "group", "head_dim"), [(3, 3, 64), (2, 2, 32)])
def test_short_extends_match_causal_attention_per_token(kernel, kv_heads, group, head_dim):
    """float32 extends of 1-3 new tokens: blocks of fewer than 12 query rows per KV head, each
    row seeing its own length, every KV head of a block in one item (8 blocks)."""
    gen = torch.Generator().manual_seed(kv_heads * 10 + group)
    k_buf, v_buf = torch.randn(2, 3000, kv_heads, head_dim, generator=gen)
    cached, extends = [0, 70, 5, 130, 64, 1, 200, 33], [3, 2, 3, 1, 3, 2, 3, 2]
    slots = torch.randint(0, 3000, (len(cached), max(cached) + max(extends)), generator=gen)
    token_rows = torch.cat([torch.full((e,), r) for r, e in enumerate(extends)])
    lens = torch.cat([torch.arange(c + 1, c + e + 1) for c, e in zip(cached, extends, strict=True)])
    q = torch.randn(len(lens), kv_heads * group * head_dim, generator=gen)
    out, lse = kernel(q, k_buf, v_buf, slots, lens, token_rows)
    ref_out, ref_lse = extend_reference(q, k_buf, v_buf, slots, lens, token_rows, kv_heads)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)


def test_extend_tokens_without_keys_get_no_weight(kernel):
    """A tiled block whose rows see 0 keys (lens 0) next to rows that see some."""
    k_buf = torch.randn(50, 1, 64)
    slots = torch.arange(50)[None]
    lens = torch.tensor([0, 3, 0, 9, 1, 0, 2, 50])
    q = torch.randn(8, 3 * 64)  # group 3: 24 rows in one block
    out, lse = kernel(q, k_buf, k_buf, slots, lens, torch.zeros(8, dtype=torch.int64))
    empty = lens == 0
    assert bool((out[empty] == 0).all()) and float(lse[empty].max()) < -1e29
    ref_out, ref_lse = extend_reference(
        q, k_buf, k_buf, slots, lens.clamp(min=1), torch.zeros(8, dtype=torch.int64), 1
    )
    torch.testing.assert_close(out[~empty], ref_out[~empty], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lse[~empty], ref_lse[~empty], rtol=1e-5, atol=1e-5)


def test_tokens_need_a_length_and_a_row_each(kernel):
    k_buf = torch.randn(10, 1, 64)
    with pytest.raises(ValueError, match="3 query tokens"):
        kernel(
            torch.randn(3, 64),
            k_buf,
            k_buf,
            torch.zeros(1, 4, dtype=torch.int64),
            torch.ones(3, dtype=torch.int64),
        )


def test_disabled_or_without_a_compiler_the_torch_path_stays(monkeypatch):
    disabled = EngineConfig(dtype="float32", disable_native_kernels=True)
    assert EngineKernels.choose(disabled, head_dim=64).decode_attention is None
    monkeypatch.setenv("CC", "no-such-compiler-radixgen")
    for dtype in ("bfloat16", "float32"):
        chosen = EngineKernels.choose(EngineConfig(dtype=dtype), head_dim=64)
        assert chosen.decode_attention is None
