"""The hybrid pool's bookkeeping: SWA slots beside the slots, tombstones in the radix tree, how
far a cached prefix stays usable through a window, and what SWA eviction may take."""

from __future__ import annotations

import torch

from radixgen.runtime.cache.kv_pool import KVPool
from radixgen.runtime.cache.radix_cache import RadixCache
from radixgen.runtime.cache.swa_allocator import SwaSlotAllocator

SIZE, SWA_SIZE, WINDOW = 64, 24, 4


def _allocator() -> SwaSlotAllocator:
    return SwaSlotAllocator(SIZE, SWA_SIZE, torch.zeros(SIZE + 1, dtype=torch.int64))


def _live_swa(alloc: SwaSlotAllocator) -> int:
    return int((alloc.slot_map != 0).sum())


def test_pool_layers_address_their_own_storage():
    pool = KVPool(8, 6, 1, 4, torch.float32, swa_layers=frozenset({0, 1, 3, 4}), swa_size=3)
    assert pool.hybrid and pool.k.shape == (2, 9, 1, 4) and pool.swa_k.shape == (4, 4, 1, 4)
    assert pool.buffers(2)[0].data_ptr() == pool.k[0].data_ptr()
    assert pool.buffers(3)[0].data_ptr() == pool.swa_k[2].data_ptr()
    assert pool.full_token_bytes == 2 * 2 * 4 * 4 and pool.swa_token_bytes == 4 * 2 * 4 * 4
    plain = KVPool(8, 6, 1, 4, torch.float32)
    assert not plain.hybrid and plain.k.shape == (6, 9, 1, 4)


def test_every_slot_comes_with_a_window_slot_until_tombstoned():
    alloc = _allocator()
    slots = alloc.alloc(10)
    assert bool(alloc.live(slots).all()) and alloc.swa.available == SWA_SIZE - 10
    assert alloc.free_swa(slots[:4]) == 4 and alloc.free_swa(slots[:4]) == 0
    assert alloc.live(slots).tolist() == [False] * 4 + [True] * 6
    assert alloc.available == SWA_SIZE - 6  # the SWA pool is the smaller
    assert alloc.alloc(SWA_SIZE) is None  # slots remain, SWA slots do not: nothing taken
    assert alloc.full.available == SIZE - 10
    alloc.free(slots)
    assert alloc.full.available == SIZE and alloc.swa.available == SWA_SIZE
    assert _live_swa(alloc) == 0


def test_adopting_moves_only_into_tombstones():
    alloc = _allocator()
    dest, source = alloc.alloc(4), alloc.alloc(4)
    alloc.free_swa(dest[:2])
    assert alloc.adopt_swa(dest, source) == 2
    assert alloc.live(dest).all() and alloc.live(source).tolist() == [False, False, True, True]


def test_a_prefix_is_usable_up_to_where_its_window_is_whole():
    alloc = _allocator()
    tree = RadixCache(alloc)
    slots = alloc.alloc(20)
    tree.insert(list(range(20)), slots)
    assert tree.window_usable_len(slots, WINDOW) == 20
    alloc.free_swa(slots[5:8])  # tombstones at 5, 6, 7
    # live runs: [0, 5) before the first tombstone, [8, 20) after: 12 >= WINDOW - 1
    assert tree.window_usable_len(slots, WINDOW) == 20
    assert tree.window_usable_len(slots[:10], WINDOW) == 5  # [8, 10) is too short a window
    assert tree.window_usable_len(slots[:11], WINDOW) == 11  # [8, 11) holds WINDOW - 1
    alloc.free_swa(slots[18:19])
    assert tree.window_usable_len(slots, WINDOW) == 18  # [19, 20) too short, [8, 18) is fine


def test_insert_revives_tombstones_from_a_fresh_copy():
    alloc = _allocator()
    tree = RadixCache(alloc)
    slots = alloc.alloc(8)
    tree.insert(list(range(8)), slots)
    alloc.free_swa(slots[:6])
    fresh = alloc.alloc(8)  # a request recomputed the same tokens
    result = tree.insert(list(range(8)), fresh)
    assert result.prefix_len == 8
    assert bool(alloc.live(tree.match_prefix(list(range(8))).indices).all())
    alloc.free(fresh)  # the caller frees its duplicates: the adopted window KV stays
    assert bool(alloc.live(slots).all()) and _live_swa(alloc) == 8


def _two_branches(alloc: SwaSlotAllocator) -> tuple[RadixCache, list[int], list[int]]:
    """A tree of 6 shared tokens, then two branches of 4: `a` (ids 6-9) and `b` (50-53)."""
    tree = RadixCache(alloc)
    shared, a, b = alloc.alloc(6), alloc.alloc(4), alloc.alloc(4)
    key_a, key_b = list(range(10)), list(range(6)) + [50, 51, 52, 53]
    tree.insert(key_a, torch.cat((shared, a)))
    tree.insert(key_b, torch.cat((shared, b)))
    return tree, key_a, key_b


def test_swa_eviction_first_keeps_a_window_before_every_node_end():
    alloc = _allocator()
    tree, key_a, key_b = _two_branches(alloc)
    nothing = torch.zeros(SIZE + 1, dtype=torch.bool)
    assert tree.evict_swa(5, nothing, WINDOW) == 5  # 3 of the shared node, 1 of each branch
    assert tree.total_size == 14 and _live_swa(alloc) == 9
    for key in (key_a, key_b, key_a[:6]):  # both leaves and the branch point: whole windows
        indices = tree.match_prefix(key).indices
        assert tree.window_usable_len(indices, WINDOW) == len(key)


def test_a_prompt_cached_chunk_by_chunk_keeps_only_its_last_window():
    alloc = _allocator()
    tree = RadixCache(alloc)
    slots = alloc.alloc(10)
    tree.insert(list(range(6)), slots[:6])  # as a chunked prefill shares it: a node per chunk
    tree.insert(list(range(10)), slots)
    nothing = torch.zeros(SIZE + 1, dtype=torch.bool)
    assert tree.evict_swa(100, nothing, WINDOW) == 10  # both passes: the leaf goes whole
    alloc.clear()
    tree.reset()
    slots = alloc.alloc(10)
    tree.insert(list(range(6)), slots[:6])
    tree.insert(list(range(10)), slots)
    assert tree.evict_swa(7, nothing, WINDOW) == 7  # the first pass: all but the last window
    assert alloc.live(slots).tolist() == [False] * 7 + [True] * 3
    assert tree.window_usable_len(tree.match_prefix(list(range(10))).indices, WINDOW) == 10


def test_an_anchored_prompt_end_keeps_its_window():
    """A finished request's prompt end (anchored) stays usable, not only its sequence's end."""
    alloc = _allocator()
    tree = RadixCache(alloc)
    slots = alloc.alloc(10)
    tree.insert(list(range(10)), slots)  # a 6-token prompt and its 4 generated tokens
    tree.anchor(list(range(6)))
    assert tree.evict_swa(4, torch.zeros(SIZE + 1, dtype=torch.bool), WINDOW) == 4
    assert alloc.live(slots).tolist() == [False] * 3 + [True] * 3 + [False] + [True] * 3
    for end in (6, 10):
        indices = tree.match_prefix(list(range(end))).indices
        assert tree.window_usable_len(indices, WINDOW) == end


def test_swa_eviction_drops_unlocked_leaves_and_tombstones_the_rest():
    alloc = _allocator()
    tree, key_a, key_b = _two_branches(alloc)
    path_b = tree.match_prefix(key_b)
    tree.lock(path_b.node)  # a running request on shared + b, seeing its last WINDOW - 1 tokens
    protected = torch.zeros(SIZE + 1, dtype=torch.bool)
    protected[path_b.indices[-(WINDOW - 1) :]] = True
    freed = tree.evict_swa(100, protected, WINDOW)
    # leaf a goes whole; the shared node and b keep their slots, lose unprotected window KV
    assert freed == 4 + 6 + 1
    assert tree.match_prefix(key_a).indices.shape[0] == 6
    assert alloc.live(path_b.indices).tolist() == [False] * 7 + [True] * 3
    assert alloc.full.available == SIZE - 10 and tree.evictable_size == 0
    tree.unlock(path_b.node)
    assert tree.evict_swa(100, torch.zeros(SIZE + 1, dtype=torch.bool), WINDOW) == 3
    assert tree.total_size == 0 and alloc.full.available == SIZE
    assert alloc.swa.available == SWA_SIZE
