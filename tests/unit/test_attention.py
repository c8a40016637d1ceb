"""Shared-prefix (cascade) attention equals plain attention of every request over its own KV.

Batches are built the way the radix cache builds them: requests share KV slots for the prefixes
they share (a system prompt for all, an article per program, nothing for unrelated requests), then
hold their own slots for the rest, including the tokens computed in this batch.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from radixgen.runtime.cache.kv_pool import KVPool
from radixgen.runtime.cache.req_table import ReqToTokenTable
from radixgen.runtime.model import attention
from radixgen.runtime.model.attention import (
    InPlaceLevel,
    InPlaceOwn,
    PaddedOwn,
    RaggedOwn,
    TorchSDPABackend,
    find_shared_segments,
)
from radixgen.runtime.model.batch import ForwardBatch, ForwardMode

H, HKV, D = 6, 2, 16


class SlotSource:
    def __init__(self):
        self.next = 1

    def take(self, n: int) -> list[int]:
        slots = list(range(self.next, self.next + n))
        self.next += n
        return slots


def tree_batch(rng: random.Random, decode: bool) -> list[tuple[list[int], int]]:
    """(KV slots of every position, tokens extended in this batch) per request.

    Shape: a system prompt shared by most requests; programs whose forks share an article;
    forks of a fork; and a few unrelated requests.
    """
    slots = SlotSource()
    system = slots.take(rng.randint(16, 40))
    requests = []
    for _ in range(rng.randint(1, 4)):  # programs
        article = system + slots.take(rng.randint(10, 60))
        for _ in range(rng.randint(1, 4)):  # forks
            fork = article + slots.take(rng.randint(0, 30))
            for _ in range(rng.randint(1, 3)):  # forks of forks
                new = 1 if decode else rng.randint(1, 12)
                requests.append((fork + slots.take(rng.randint(0, 20) + new), new))
    for _ in range(rng.randint(0, 2)):  # unrelated
        new = 1 if decode else rng.randint(1, 12)
        requests.append((slots.take(rng.randint(1, 50) + new), new))
    rng.shuffle(requests)
    return requests


def run_backend(requests, dtype, decode_kernel=None):
    max_len = max(len(s) for s, _ in requests)
    size = max(max(s) for s, _ in requests)
    pool = KVPool(size, 1, HKV, D, dtype)
    table = ReqToTokenTable(len(requests) + 1, max_len + 1)
    backend = TorchSDPABackend(pool, table, H, HKV, decode_kernel)
    gen = torch.Generator().manual_seed(0)
    pool.k[0].copy_(torch.randn(pool.k[0].shape, generator=gen))
    pool.v[0].copy_(torch.randn(pool.v[0].shape, generator=gen))
    for row, (slot_list, _) in enumerate(requests, start=1):
        table.write(row, 0, torch.tensor(slot_list))
    extend = torch.tensor([n for _, n in requests])
    seq = torch.tensor([len(s) for s, _ in requests])
    new_slots = torch.cat([torch.tensor(s[len(s) - n :]) for s, n in requests])
    T = int(extend.sum())
    q = torch.randn(T, H * D, generator=gen).to(dtype)
    k_new = pool.k[0, new_slots].reshape(T, HKV * D).clone()  # written back unchanged
    v_new = pool.v[0, new_slots].reshape(T, HKV * D).clone()
    mode = ForwardMode.DECODE if bool((extend == 1).all()) else ForwardMode.EXTEND
    batch = ForwardBatch(
        mode,
        torch.zeros(T, dtype=torch.int64),
        torch.cat([torch.arange(len(s) - n, len(s)) for s, n in requests]),
        new_slots,
        torch.arange(1, len(requests) + 1),
        seq,
        extend,
        torch.arange(T),
    )
    meta = backend.prepare(batch)
    out = backend.forward(0, q, k_new, v_new, meta)  # [T, H*D]
    return out, q, pool, meta


def reference(requests, q, pool):
    """Plain causal attention per request over its own gathered KV, in float32."""
    outs, first = [], 0
    for slot_list, n in requests:
        k = pool.k[0, slot_list].float().repeat_interleave(H // HKV, dim=1)  # [L, H, D]
        v = pool.v[0, slot_list].float().repeat_interleave(H // HKV, dim=1)
        qr = q[first : first + n].float().view(n, H, D)
        L = len(slot_list)
        mask = torch.arange(L)[None, :] <= torch.arange(L - n, L)[:, None]  # [n, L]
        out = F.scaled_dot_product_attention(
            qr.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask
        )  # [H, n, D]
        outs.append(out.transpose(0, 1).reshape(n, H * D))
        first += n
    return torch.cat(outs)


# The backend picks padded or per-request own parts by a cost estimate; force each in turn.
OWN_LAYOUTS = {"padded": (float("inf"), PaddedOwn), "ragged": (0.0, RaggedOwn)}


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("decode", [True, False])
@pytest.mark.parametrize("layout", OWN_LAYOUTS)
def test_cascade_attention_matches_per_request_attention(seed, decode, layout, monkeypatch):
    threshold, own_type = OWN_LAYOUTS[layout]
    monkeypatch.setattr(attention, "RAGGED_WASTE_RATIO", threshold)
    monkeypatch.setattr(attention, "MIN_SEGMENT_SAVING", 0)  # every shared prefix >= 16 tokens
    rng = random.Random(seed)
    requests = tree_batch(rng, decode)
    out, q, pool, meta = run_backend(requests, torch.float32)
    torch.testing.assert_close(out, reference(requests, q, pool), rtol=1e-4, atol=1e-5)
    assert isinstance(meta.own, own_type)
    if len(requests) > 1:
        assert meta.shared_levels, "a batch with shared prefixes found none"


def test_fresh_prompt_is_one_causal_problem():
    requests = [(list(range(1, 41)), 40)]
    out, q, pool, meta = run_backend(requests, torch.float32)
    assert isinstance(meta.own, RaggedOwn) and meta.own.cached_slots == (None,)
    torch.testing.assert_close(out, reference(requests, q, pool), rtol=1e-4, atol=1e-5)


def test_bfloat16_cascade_attention_is_close():
    requests = tree_batch(random.Random(99), decode=True)
    out, q, pool, _ = run_backend(requests, torch.bfloat16)
    torch.testing.assert_close(out.float(), reference(requests, q, pool), rtol=0.02, atol=0.02)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("decode", [True, False])
def test_native_kernel_reads_own_parts_in_place(seed, dtype, decode, monkeypatch, kernel):
    """With the native kernel, decode and short-extend own parts skip the gather (an extend's
    new tokens are query rows, each over its request's KV up to itself); segments merge in."""
    monkeypatch.setattr(attention, "MIN_IN_PLACE_SEGMENT_SAVING", 0)
    monkeypatch.setattr(attention, "MIN_IN_PLACE_DECODE_SEGMENT_SAVING", 0)
    requests = tree_batch(random.Random(seed), decode=decode)  # extends of 1-12 tokens
    out, q, pool, meta = run_backend(requests, dtype, kernel)
    assert isinstance(meta.own, InPlaceOwn)
    if len(requests) > 1:
        assert meta.shared_levels, "a batch with shared prefixes found none"
        # decode steps read segments in place too, a level per call; extends gather them
        assert all(isinstance(level, InPlaceLevel) == decode for level in meta.shared_levels)
    tol = {"rtol": 0.02, "atol": 0.02} if dtype == torch.bfloat16 else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(out.float(), reference(requests, q, pool), **tol)
    torch_out, *_ = run_backend(requests, dtype)
    torch.testing.assert_close(out.float(), torch_out.float(), **tol)


@pytest.mark.parametrize(
    ("dtype", "limit"),
    [(torch.float32, "MAX_IN_PLACE_EXTEND"), (torch.bfloat16, "MAX_IN_PLACE_EXTEND_BFLOAT16")],
)
def test_extends_up_to_the_limit_run_in_place_and_wider_ones_gather(kernel, dtype, limit):
    """float32 pools take long extends (blocks of new tokens, register-tiled) and fresh prompts
    in place; bfloat16 pools (row by row) only short ones. Past its limit an extend gathers."""
    tol = {"rtol": 0.02, "atol": 0.02} if dtype == torch.bfloat16 else {"rtol": 1e-4, "atol": 1e-5}
    slots, most = SlotSource(), getattr(attention, limit)
    article = slots.take(120)
    for requests in (
        [(article + slots.take(most), most), (article + slots.take(37), 17), (slots.take(9), 3)],
        [(slots.take(most), most)],  # a fresh prompt
    ):
        out, q, pool, meta = run_backend(requests, dtype, kernel)
        assert isinstance(meta.own, InPlaceOwn)
        torch.testing.assert_close(out.float(), reference(requests, q, pool), **tol)
    wide = most + 1
    requests = [(slots.take(100) + slots.take(wide), wide), (slots.take(9), 3)]
    out, q, pool, meta = run_backend(requests, dtype, kernel)
    assert not isinstance(meta.own, InPlaceOwn)
    torch.testing.assert_close(out.float(), reference(requests, q, pool), **tol)


def test_in_place_decode_splits_off_only_widely_shared_prefixes(kernel):
    """Six forks over a 650-token article re-read it cheaply in place: no segment. Without the
    kernel the same batch splits the article off (it saves 3,250 gathered tokens)."""
    slots = SlotSource()
    article = slots.take(650)
    requests = [(article + slots.take(5), 1) for _ in range(6)]
    _, _, _, meta = run_backend(requests, torch.bfloat16, kernel)
    assert meta.shared_levels == () and isinstance(meta.own, InPlaceOwn)
    _, _, _, meta = run_backend(requests, torch.bfloat16)
    assert len(meta.shared_levels) == 1


def test_segments_follow_the_prefix_tree():
    # Rows 0-2 share 20 slots; rows 0-1 share 16 more; row 3 shares nothing.
    common = list(range(1, 21))
    fork = common + list(range(21, 37))
    rows = [fork + [100, 101], fork + [200], common + [300] * 5, list(range(400, 430))]
    width = max(map(len, rows))
    kv = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    prefix_lens = torch.tensor([len(r) - 1 for r in rows])
    levels, own_start = find_shared_segments(kv, prefix_lens, min_len=16, min_saving=0)
    assert [[s.rows.tolist() for s in level] for level in levels] == [[[0, 1, 2]], [[0, 1]]]
    assert [[s.slots.tolist() for s in level] for level in levels] == [
        [common],
        [list(range(21, 37))],
    ]
    assert own_start.tolist() == [36, 36, 20, 0]
    # Segments never reach into tokens computed in the batch (beyond the cached prefix).
    short = torch.tensor([10, 10, 10, 10])
    levels, own_start = find_shared_segments(kv, short, min_len=4, min_saving=0)
    assert own_start.tolist() == [10, 10, 10, 0]


def test_small_groups_stay_in_the_own_parts():
    # Two requests sharing 300 tokens re-read 300 tokens fewer as a segment: not worth it.
    # Eight sharing them re-read 2,100 fewer: a segment.
    prefix = list(range(1, 301))
    for n, expected in [(2, 0), (8, 1)]:
        kv = torch.tensor([prefix + [1000 + i] for i in range(n)])
        levels, _ = find_shared_segments(kv, torch.full((n,), 300), min_saving=1024)
        assert len(levels) == expected


def test_few_shot_extend_keeps_the_segment_and_pads_the_short_own_parts():
    """Questions of uneven length over one shared few-shot prefix: their causal own parts pad
    badly alone but cost little next to the prefix, so they run as one padded problem beside
    one shared segment (no call per request)."""
    rng = random.Random(5)
    slots = SlotSource()
    prefix = slots.take(300)
    requests = []
    for _ in range(6):
        new = rng.randint(16, 30)
        requests.append((prefix + slots.take(new), new))
    out, q, pool, meta = run_backend(requests, torch.float32)
    assert len(meta.shared_levels) == 1 and isinstance(meta.own, PaddedOwn)
    torch.testing.assert_close(out, reference(requests, q, pool), rtol=1e-4, atol=1e-5)


def test_uneven_own_parts_of_even_sequences_run_as_one_padded_problem(monkeypatch):
    """Three requests share a 300-token prefix, a fourth has 600 cached tokens of its own: the
    own parts (20 / 620 keys) pad badly even next to the segment, whole sequences pad well."""
    monkeypatch.setattr(attention, "MIN_SEGMENT_SAVING", 0)
    slots = SlotSource()
    prefix = slots.take(300)
    requests = [(prefix + slots.take(20), 20) for _ in range(3)]
    requests.append((slots.take(620), 20))
    out, q, pool, meta = run_backend(requests, torch.float32)
    assert meta.shared_levels == () and isinstance(meta.own, PaddedOwn)
    torch.testing.assert_close(out, reference(requests, q, pool), rtol=1e-4, atol=1e-5)
