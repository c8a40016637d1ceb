"""Attention plans and their executors equal plain causal attention of each request over its KV.

Batches are built the way the radix cache builds them: requests share KV slots for the prefixes
they share (a system prompt for all, an article per program, nothing for unrelated requests),
then hold their own slots for the rest, including the tokens computed in this batch.

The planner is checked on its own, on every machine: the plans it builds for every target (the
AMX one included) run on `ReferenceExecutor`, plain PyTorch. Each real executor is then checked
against the reference on the same plans, where its kernel runs.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from radixgen.runtime.cache.kv_pool import KVPool
from radixgen.runtime.cache.req_table import ReqToTokenTable
from radixgen.runtime.config import EngineConfig
from radixgen.runtime.kernels.engine_kernels import EngineKernels
from radixgen.runtime.model.attention import (
    AmxExecutor,
    AttentionPlanner,
    NativeExecutor,
    PlanTarget,
    ReferenceExecutor,
)
from radixgen.runtime.model.attention.plan import AttentionPlan, Method, SplitPlan
from radixgen.runtime.model.attention.prefix_tree import find_shared_segments
from radixgen.runtime.model.batch import ForwardBatch, ForwardMode
from radixgen.runtime.tuning import Tuning

H, HKV, D = 6, 2, 16
F32 = {"rtol": 1e-4, "atol": 1e-5}
BF16 = {"rtol": 0.02, "atol": 0.02}


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


class Scene:
    """One layer's KV pool and req-to-token table holding a batch, its queries and new K/V."""

    def __init__(self, requests, dtype, heads=(H, HKV), head_dim=D):
        self.requests = requests
        self.heads, self.head_dim = heads, head_dim
        max_len = max(len(s) for s, _ in requests)
        size = max(max(s) for s, _ in requests) + 1
        self.pool = KVPool(size, 1, heads[1], head_dim, dtype)
        self.table = ReqToTokenTable(len(requests) + 1, max_len + 1)
        gen = torch.Generator().manual_seed(0)
        self.pool.k[0].copy_(torch.randn(self.pool.k[0].shape, generator=gen))
        self.pool.v[0].copy_(torch.randn(self.pool.v[0].shape, generator=gen))
        for row, (slot_list, _) in enumerate(requests, start=1):
            self.table.write(row, 0, torch.tensor(slot_list))
        extend = torch.tensor([n for _, n in requests])
        new_slots = torch.cat([torch.tensor(s[len(s) - n :]) for s, n in requests])
        T = int(extend.sum())
        self.q = torch.randn(T, heads[0] * head_dim, generator=gen).to(dtype)
        self.k_new = self.pool.k[0, new_slots].reshape(T, -1).clone()  # written back unchanged
        self.v_new = self.pool.v[0, new_slots].reshape(T, -1).clone()
        self.batch = ForwardBatch(
            ForwardMode.DECODE if bool((extend == 1).all()) else ForwardMode.EXTEND,
            torch.zeros(T, dtype=torch.int64),
            torch.cat([torch.arange(len(s) - n, len(s)) for s, n in requests]),
            new_slots,
            torch.arange(1, len(requests) + 1),
            torch.tensor([len(s) for s, _ in requests]),
            extend,
            torch.arange(T),
        )

    def plan(self, target: PlanTarget, tuning: Tuning | None = None):
        planner = AttentionPlanner(self.table, tuning or Tuning(), target, self.pool.k.dtype)
        return planner.plan(self.batch)

    def run(self, executor, plan) -> torch.Tensor:  # [T, H*D]
        return executor.forward(0, self.q, self.k_new, self.v_new, plan)

    def reference(self) -> torch.Tensor:
        """Plain causal attention per request over its own gathered KV, in float32."""
        (heads, kv_heads), head_dim = self.heads, self.head_dim
        group = heads // kv_heads
        outs, first = [], 0
        for slot_list, n in self.requests:
            k = self.pool.k[0, slot_list].float().repeat_interleave(group, dim=1)  # [L, H, D]
            v = self.pool.v[0, slot_list].float().repeat_interleave(group, dim=1)
            qr = self.q[first : first + n].float().view(n, heads, head_dim)
            L = len(slot_list)
            mask = torch.arange(L)[None, :] <= torch.arange(L - n, L)[:, None]  # [n, L]
            out = F.scaled_dot_product_attention(
                qr.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask
            )  # [H, n, D]
            outs.append(out.transpose(0, 1).reshape(n, heads * head_dim))
            first += n
        return torch.cat(outs)


# Tunings that force each of the planner's choices in turn.
EVERY_SEGMENT = Tuning(
    min_segment_saving=0,
    min_in_place_segment_saving=0,
    min_in_place_decode_segment_saving=0,
    amx_min_segment_saving=0,
)
TUNINGS = {
    "default": Tuning(),
    "segments+padded": replace(EVERY_SEGMENT, ragged_waste_ratio=float("inf")),
    "segments+per-request": replace(EVERY_SEGMENT, ragged_waste_ratio=0.0),
}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decode", [True, False])
@pytest.mark.parametrize("target", list(PlanTarget))
@pytest.mark.parametrize("tuning", TUNINGS)
def test_every_plan_computes_causal_attention_per_request(seed, decode, target, tuning):
    """Any target's plans, run by the reference executor: the planner alone decides what is
    computed, so this covers the AMX planning on machines without AMX."""
    scene = Scene(tree_batch(random.Random(seed), decode), torch.float32)
    plan = scene.plan(target, TUNINGS[tuning])
    if tuning != "default" and len(scene.requests) > 1:
        assert plan.shared, "a batch with shared prefixes found none"
    executor = ReferenceExecutor(scene.pool, H, HKV)
    torch.testing.assert_close(scene.run(executor, plan), scene.reference(), **F32)


@pytest.mark.parametrize("target", list(PlanTarget))
def test_a_fresh_prompt_is_one_causal_problem(target):
    scene = Scene([(list(range(1, 41)), 40)], torch.float32)
    plan = scene.plan(target)
    assert plan.shared == () and plan.own.limits.tolist() == list(range(1, 41))
    torch.testing.assert_close(
        scene.run(ReferenceExecutor(scene.pool, H, HKV), plan), scene.reference(), **F32
    )


def test_the_reference_executor_catches_a_wrong_plan():
    """The check above can fail: a plan whose limits drop each token's own key is wrong."""
    scene = Scene(tree_batch(random.Random(3), decode=False), torch.float32)
    plan = scene.plan(PlanTarget.GATHER)
    broken = replace(plan, own=replace(plan.own, limits=(plan.own.limits - 1).clamp(min=1)))
    out = scene.run(ReferenceExecutor(scene.pool, H, HKV), broken)
    assert not torch.allclose(out, scene.reference(), **F32)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decode", [True, False])
@pytest.mark.parametrize("tuning", TUNINGS)
def test_flash_executor_matches_the_reference(seed, decode, tuning):
    """Without the native kernel every pass is gathered and run on torch's flash attention."""
    scene = Scene(tree_batch(random.Random(seed), decode), torch.float32)
    executor = NativeExecutor(scene.pool, H, HKV, None)
    assert executor.target is PlanTarget.GATHER
    plan = scene.plan(executor.target, TUNINGS[tuning])
    expected = scene.run(ReferenceExecutor(scene.pool, H, HKV), plan)
    torch.testing.assert_close(scene.run(executor, plan), expected, **F32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("decode", [True, False])
@pytest.mark.parametrize("tuning", ["default", "segments+padded"])
def test_native_executor_matches_the_reference(seed, decode, dtype, tuning, kernel):
    """Decode and short-extend own parts read in place (an extend's new tokens each over its
    request's KV up to itself); decode steps read their segments in place, extends gather."""
    scene = Scene(tree_batch(random.Random(seed), decode), dtype)
    executor = NativeExecutor(scene.pool, H, HKV, kernel)
    plan = scene.plan(executor.target, TUNINGS[tuning])
    assert plan.own.method is Method.IN_PLACE
    if tuning != "default" and len(scene.requests) > 1:
        assert plan.shared, "a batch with shared prefixes found none"
    level_method = Method.IN_PLACE if decode else Method.GATHERED
    assert all(level.method is level_method for level in plan.shared)
    tol = BF16 if dtype == torch.bfloat16 else F32
    expected = scene.run(ReferenceExecutor(scene.pool, H, HKV), plan)
    torch.testing.assert_close(scene.run(executor, plan).float(), expected.float(), **tol)
    torch.testing.assert_close(scene.run(executor, plan).float(), scene.reference(), **tol)


@pytest.fixture(scope="module")
def amx_kernel():
    found = EngineKernels.choose(EngineConfig(dtype="bfloat16"), head_dim=64).segment_attention
    if found is None:
        pytest.skip("the AMX segment kernel does not run here")
    return found


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("decode", [True, False])
def test_amx_executor_matches_the_reference(seed, decode, amx_kernel):
    scene = Scene(
        tree_batch(random.Random(seed), decode), torch.bfloat16, heads=(9, 3), head_dim=64
    )
    executor = AmxExecutor(scene.pool, 9, 3, amx_kernel)
    plan = scene.plan(executor.target, TUNINGS["segments+padded"])
    expected = scene.run(ReferenceExecutor(scene.pool, 9, 3), plan)
    torch.testing.assert_close(scene.run(executor, plan).float(), expected.float(), **BF16)


# --- the planner's choices ---


def test_bfloat16_plans_are_close():
    scene = Scene(tree_batch(random.Random(99), decode=True), torch.bfloat16)
    out = scene.run(NativeExecutor(scene.pool, H, HKV, None), scene.plan(PlanTarget.GATHER))
    torch.testing.assert_close(out.float(), scene.reference(), **BF16)


@pytest.mark.parametrize(
    ("dtype", "limit"),
    [(torch.float32, "max_in_place_extend"), (torch.bfloat16, "max_in_place_extend_bfloat16")],
)
def test_extends_up_to_the_limit_run_in_place_and_wider_ones_gather(dtype, limit):
    """float32 pools take long extends (blocks of new tokens, register-tiled) and fresh prompts
    in place; bfloat16 pools (row by row) only short ones. Past its limit an extend gathers."""
    slots, most = SlotSource(), getattr(Tuning(), limit)
    article = slots.take(120)
    for requests in (
        [(article + slots.take(most), most), (article + slots.take(37), 17), (slots.take(9), 3)],
        [(slots.take(most), most)],  # a fresh prompt
    ):
        plan = Scene(requests, dtype).plan(PlanTarget.IN_PLACE)
        assert plan.own.method is Method.IN_PLACE
    wide = most + 1
    requests = [(slots.take(100) + slots.take(wide), wide), (slots.take(9), 3)]
    scene = Scene(requests, dtype)
    plan = scene.plan(PlanTarget.IN_PLACE)
    assert plan.own.method is not Method.IN_PLACE
    tol = BF16 if dtype == torch.bfloat16 else F32
    out = scene.run(ReferenceExecutor(scene.pool, H, HKV), plan)
    torch.testing.assert_close(out.float(), scene.reference(), **tol)


def test_in_place_decode_splits_off_only_widely_shared_prefixes():
    """Six forks over a 650-token article re-read it cheaply in place: no segment. Gathering,
    the same batch splits the article off (it saves 3,250 gathered tokens)."""
    slots = SlotSource()
    article = slots.take(650)
    scene = Scene([(article + slots.take(5), 1) for _ in range(6)], torch.bfloat16)
    plan = scene.plan(PlanTarget.IN_PLACE)
    assert plan.shared == () and plan.own.method is Method.IN_PLACE
    assert len(scene.plan(PlanTarget.GATHER).shared) == 1


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
        levels, _ = find_shared_segments(kv, torch.full((n,), 300), min_len=16, min_saving=1024)
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
    scene = Scene(requests, torch.float32)
    plan = scene.plan(PlanTarget.GATHER)
    assert len(plan.shared) == 1 and plan.own.method is Method.PADDED
    out = scene.run(NativeExecutor(scene.pool, H, HKV, None), plan)
    torch.testing.assert_close(out, scene.reference(), **F32)


def test_uneven_own_parts_of_even_sequences_run_as_one_padded_problem():
    """Three requests share a 300-token prefix, a fourth has 600 cached tokens of its own: the
    own parts (20 / 620 keys) pad badly even next to the segment, whole sequences pad well."""
    slots = SlotSource()
    prefix = slots.take(300)
    requests = [(prefix + slots.take(20), 20) for _ in range(3)]
    requests.append((slots.take(620), 20))
    scene = Scene(requests, torch.float32)
    plan = scene.plan(PlanTarget.GATHER, Tuning(min_segment_saving=0))
    assert plan.shared == () and plan.own.method is Method.PADDED
    out = scene.run(NativeExecutor(scene.pool, H, HKV, None), plan)
    torch.testing.assert_close(out, scene.reference(), **F32)


def mixed_step(chunk: int) -> list[tuple[list[int], int]]:
    """A mixed step's batch: decode rows (one new token each; four share a system prompt)
    next to a prompt chunk of `chunk` new tokens over its own first chunk."""
    slots = SlotSource()
    system = slots.take(30)
    requests = [(system + slots.take(n), 1) for n in (5, 40, 12, 70)]
    requests.append((slots.take(50), 1))
    requests.append((slots.take(20 + chunk), chunk))
    requests.append((slots.take(9), 1))  # a decode row after the chunk, too
    return requests


@pytest.mark.parametrize(
    ("target", "dtype", "tuning"),
    [
        (PlanTarget.GATHER, torch.float32, Tuning()),
        (PlanTarget.IN_PLACE, torch.bfloat16, Tuning()),
        (PlanTarget.IN_PLACE, torch.float32, Tuning(max_in_place_extend=16)),
    ],
    ids=["gather", "in-place-bfloat16", "in-place-float32"],
)
def test_decode_rows_beside_a_long_chunk_plan_as_a_decode_step(target, dtype, tuning, kernel):
    """A chunk past the in-place limit would give each decode row a flash problem of its own;
    the decode rows instead run as a decode step would (in place on the native kernel), the
    chunk as an extend, and the result is still each request's causal attention."""
    scene = Scene(mixed_step(40), dtype)
    plan = scene.plan(target, tuning)
    assert isinstance(plan, SplitPlan)
    (decode_tokens, decode_plan), (chunk_tokens, chunk_plan) = plan.parts
    assert decode_tokens.tolist() == [0, 1, 2, 3, 4, 45]
    assert chunk_tokens.tolist() == list(range(5, 45))
    if target is PlanTarget.IN_PLACE:
        assert decode_plan.own.method is Method.IN_PLACE
        assert chunk_plan.own.method is not Method.IN_PLACE
    tol = BF16 if dtype == torch.bfloat16 else F32
    reference = scene.run(ReferenceExecutor(scene.pool, H, HKV), plan)
    torch.testing.assert_close(reference.float(), scene.reference(), **tol)
    native = NativeExecutor(scene.pool, H, HKV, kernel if target is PlanTarget.IN_PLACE else None)
    torch.testing.assert_close(scene.run(native, plan).float(), scene.reference(), **tol)


@pytest.mark.parametrize("chunk", [12, 24])
def test_decode_rows_beside_a_short_extend_stay_one_plan(chunk):
    """Below the compute-bound width (gathering) or within the in-place limit, one plan."""
    scene = Scene(mixed_step(chunk), torch.bfloat16)
    target = PlanTarget.GATHER if chunk == 12 else PlanTarget.IN_PLACE
    assert isinstance(scene.plan(target), AttentionPlan)
