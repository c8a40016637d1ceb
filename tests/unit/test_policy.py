"""Waiting-queue policies order requests as documented, on a real radix tree."""

from __future__ import annotations

from radixgen.runtime.cache.kv_pool import SlotAllocator
from radixgen.runtime.cache.req_table import ReqToTokenTable
from radixgen.runtime.request import LogprobOptions, Req
from radixgen.runtime.sampling_params import SamplingParams
from radixgen.runtime.scheduler.cache_manager import CacheManager
from radixgen.runtime.scheduler.policy import order_waiting


def _req(rid: str, ids: list[int]) -> Req:
    return Req(rid, ids, SamplingParams(), LogprobOptions(), detokenizer=None)


def _cache_with(*sequences: list[int], disabled: bool = False) -> CacheManager:
    cache = CacheManager(SlotAllocator(256), ReqToTokenTable(4, 64), disabled)
    for seq in sequences:
        slots = cache.allocator.alloc(len(seq))
        cache.tree.insert(seq, slots)
    return cache


A = [1, 2, 3, 4, 5, 6, 7, 8]  # cached
B = [9, 9, 9, 9]  # cached


def test_lpm_puts_longest_cached_prefix_first_and_keeps_arrival_order_on_ties():
    cache = _cache_with(A, B)
    waiting = [
        _req("none", [5, 5, 5]),
        _req("b3", B[:3] + [0]),
        _req("a8", A + [0]),
        _req("a4", A[:4] + [0]),
        _req("none2", [6, 6]),
    ]
    assert [r.rid for r in order_waiting(waiting, "lpm", cache)] == [
        "a8",
        "a4",
        "b3",
        "none",
        "none2",
    ]


def test_fcfs_and_disabled_cache_keep_arrival_order():
    waiting = [_req("x", [5, 5]), _req("a", A + [1]), _req("b", B + [1])]
    assert [r.rid for r in order_waiting(waiting, "fcfs", _cache_with(A, B))] == ["x", "a", "b"]
    disabled = _cache_with(disabled=True)
    assert [r.rid for r in order_waiting(waiting, "lpm", disabled)] == ["x", "a", "b"]


def test_dfs_weight_runs_the_heaviest_subtree_first_and_keeps_groups_together():
    cache = _cache_with(A, B)
    waiting = [
        _req("b1", B + [1]),
        _req("a1", A + [1]),
        _req("b2", B + [2]),
        _req("b3", B + [3]),
        _req("a2", A + [2]),
    ]
    ordered = [r.rid for r in order_waiting(waiting, "dfs-weight", cache)]
    assert ordered[:3] == ["b1", "b2", "b3"]  # three waiting under B outweigh two under A
    assert ordered[3:] == ["a1", "a2"]


def test_dfs_weight_admits_deeper_cached_matches_before_their_ancestors_requests():
    # Post-order, as SGLang: a request at a node waits for the requests below it, so prompts
    # reusing a cached prefix run before new prompts (matched at the root) can evict it.
    cache = _cache_with(A)
    waiting = [
        _req("none1", [5, 5, 5]),
        _req("a4", A[:4] + [0]),  # splits A's edge: its node is an ancestor of a8's
        _req("a8", A + [0]),
        _req("none2", [6, 6]),
    ]
    ordered = [r.rid for r in order_waiting(waiting, "dfs-weight", cache)]
    assert ordered == ["a8", "a4", "none1", "none2"]


def test_ordering_does_not_lock_or_leak_memory():
    cache = _cache_with(A)
    before = (cache.allocator.available, cache.tree.evictable_size, cache.tree.protected_size)
    order_waiting([_req("a", A[:5] + [0])], "lpm", cache)
    assert (
        cache.allocator.available,
        cache.tree.evictable_size,
        cache.tree.protected_size,
    ) == before
