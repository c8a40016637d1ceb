"""Prefill admission budgets on a real cache: a request's own cached prefix is not room."""

from __future__ import annotations

from radixgen.runtime.cache.kv_pool import SlotAllocator
from radixgen.runtime.cache.req_table import ReqToTokenTable
from radixgen.runtime.config import EngineConfig
from radixgen.runtime.request import LogprobOptions, Req
from radixgen.runtime.sampling_params import SamplingParams
from radixgen.runtime.scheduler.cache_manager import CacheManager
from radixgen.runtime.scheduler.prefill import PrefillManager

PREFIX = list(range(100, 160))  # 60 cached tokens, evictable (no request locks them)


def _req(rid: str, ids: list[int], max_new_tokens: int) -> Req:
    params = SamplingParams(max_new_tokens=max_new_tokens)
    return Req(rid, ids, params, LogprobOptions(), detokenizer=None)


def _setup() -> tuple[CacheManager, PrefillManager]:
    cache = CacheManager(SlotAllocator(100), ReqToTokenTable(4, 128), False)
    cache.tree.insert(PREFIX, cache.allocator.alloc(len(PREFIX)))
    return cache, PrefillManager(EngineConfig(), cache)


def test_a_requests_own_unlocked_prefix_does_not_count_as_room_for_it():
    cache, prefill = _setup()
    busy = _req("busy", [1], max_new_tokens=0)  # running, reserves nothing: not "alone"
    # 30 new tokens + 0.7 x 30 expected decode = 51: more than the 40 free slots, less than
    # free + evictable (100), of which 60 are the prefix the request itself locks
    waiting = _req("q", PREFIX + list(range(30)), max_new_tokens=30)
    assert cache.tree.unlocked_len(cache.match(waiting)[1]) == 60
    assert prefill.build([waiting], [busy], None, 0.7) is None
    assert (cache.allocator.available, cache.tree.evictable_size) == (40, 60)  # untouched
    fits = _req("r", PREFIX + list(range(30)), max_new_tokens=10)  # 30 + 7 <= 40
    batch = prefill.build([fits], [busy], None, 0.7)
    assert batch is not None and batch.reqs == [fits]
    assert cache.tree.unlocked_len(fits.last_node) == 0  # now locked


def test_unlocked_len_stops_at_a_locked_ancestor():
    cache, _ = _setup()
    cache.tree.insert(PREFIX + [7, 8, 9], cache.allocator.alloc(3))
    node = cache.match(_req("x", PREFIX + [7, 8, 9, 0], max_new_tokens=1))[1]
    assert cache.tree.unlocked_len(node) == 63
    cache.tree.lock(node.parent)  # the 60-token prefix node
    assert cache.tree.unlocked_len(node) == 3
