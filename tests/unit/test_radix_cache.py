"""Unit and property-based tests of the KV-cache data structures: SlotAllocator and RadixCache.

The deterministic tests pin down single behaviours (matching, insertion, splitting, locking, LRU
eviction). The hypothesis state machine drives an allocator and a tree the way the runtime's
CacheManager does (match + lock, allocate, share progress, release, evict, flush) and checks the
slot-ownership and tree invariants after every step.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from radixgen.runtime.cache.kv_pool import SlotAllocator
from radixgen.runtime.cache.radix_cache import MatchResult, RadixCache, TreeNode


def _tensor(slots: list[int]) -> torch.Tensor:
    return torch.tensor(slots, dtype=torch.int64)


def _path(node: TreeNode) -> tuple[list[int], list[int]]:
    """Token ids and slots spelled by the edges from the root down to `node`."""
    edges = []
    while node.parent is not None:
        edges.append(node)
        node = node.parent
    keys, values = [], []
    for edge in reversed(edges):
        keys.extend(edge.key)
        values.extend(edge.value.tolist())
    return keys, values


def _nodes(tree: RadixCache) -> list[TreeNode]:
    """Every non-root node, found by walking the children dicts from the root."""
    found, stack = [], list(tree.root.children.values())
    while stack:
        node = stack.pop()
        found.append(node)
        stack.extend(node.children.values())
    return found


def _is_attached(tree: RadixCache, node: TreeNode) -> bool:
    """True when `node` is reachable from the root (it was not evicted or dropped by a reset)."""
    while node is not tree.root:
        parent = node.parent
        if parent is None or not node.key or parent.children.get(node.key[0]) is not node:
            return False
        node = parent
    return True


def _new_cache(size: int = 32) -> tuple[SlotAllocator, RadixCache]:
    allocator = SlotAllocator(size)
    return allocator, RadixCache(allocator)


def _insert_fresh(
    allocator: SlotAllocator, tree: RadixCache, key: list[int]
) -> tuple[list[int], int]:
    """Insert `key` with newly allocated slots, freeing the duplicates like the runtime does.
    Returns the slots passed in and the insert's prefix_len."""
    slots = allocator.alloc(len(key))
    assert slots is not None
    inserted = tree.insert(key, slots)
    allocator.free(slots[: inserted.prefix_len])
    return slots.tolist(), inserted.prefix_len


# --- SlotAllocator ---------------------------------------------------------------------------


def _free_in_reuse_order(allocator: SlotAllocator) -> list[int]:
    """The free slots in the order `alloc` hands them out (the allocator is left as it was)."""
    slots = allocator.alloc(allocator.available)
    allocator.free(slots)
    return slots.tolist()


def test_allocator_never_hands_out_padding_slot_zero():
    """Allocating the whole pool yields exactly slots 1..size; slot 0 stays reserved."""
    allocator = SlotAllocator(8)
    slots = allocator.alloc(8)
    assert sorted(slots.tolist()) == list(range(1, 9))
    assert allocator.available == 0


def test_allocator_refuses_to_overcommit_and_takes_slots_back():
    """alloc returns None (and changes nothing) when too few slots are free; free and clear
    return slots to the free list."""
    allocator = SlotAllocator(4)
    first = allocator.alloc(3)
    assert allocator.alloc(2) is None
    assert allocator.available == 1
    allocator.free(first[:2])
    assert allocator.available == 3
    assert allocator.alloc(0).numel() == 0
    allocator.clear()
    assert allocator.available == 4
    assert sorted(_free_in_reuse_order(allocator)) == [1, 2, 3, 4]


# --- RadixCache: matching and insertion -----------------------------------------------------


def test_match_on_empty_tree_returns_root_and_no_indices():
    """A match against an empty tree finds nothing and ends at the root."""
    _, tree = _new_cache()
    for key in ([], [1, 2, 3]):
        match = tree.match_prefix(key)
        assert match.indices.numel() == 0
        assert match.indices.dtype == torch.int64
        assert match.node is tree.root
    assert tree.total_size == 0


def test_insert_reports_length_of_already_cached_prefix():
    """insert's prefix_len is the number of leading tokens already cached; for those the tree
    keeps its own slots and it takes ownership of the caller's slots for the rest."""
    allocator, tree = _new_cache()
    first, prefix_len = _insert_fresh(allocator, tree, [1, 2, 3])
    assert prefix_len == 0

    second, prefix_len = _insert_fresh(allocator, tree, [1, 2, 3, 4, 5])
    assert prefix_len == 3
    assert tree.match_prefix([1, 2, 3, 4, 5]).indices.tolist() == first + second[3:]

    node = tree.match_prefix([1, 2, 3, 4, 5]).node
    again = tree.insert([1, 2, 3, 4, 5], _tensor([30, 31, 32, 33, 34]))
    assert again.prefix_len == 5
    assert again.node is node

    _, prefix_len = _insert_fresh(allocator, tree, [1, 2, 7])  # diverges inside edge [1, 2, 3]
    assert prefix_len == 2
    assert tree.evictable_size == 3 + 2 + 1
    assert tree.protected_size == 0
    assert allocator.available + tree.total_size == allocator.size


def test_insert_ending_inside_an_edge_returns_node_ending_at_the_key():
    """Inserting a strict prefix of a cached edge splits it and returns the upper half."""
    allocator, tree = _new_cache()
    slots, _ = _insert_fresh(allocator, tree, [1, 2, 3, 4])
    inserted = tree.insert([1, 2], _tensor([20, 21]))
    assert inserted.prefix_len == 2
    assert _path(inserted.node) == ([1, 2], slots[:2])
    assert tree.total_size == 4


def test_match_ending_inside_an_edge_splits_the_node():
    """A match that stops inside an edge splits it: the returned node ends exactly at the match,
    its path holds the inserted slots of that prefix, and the lower half keeps the rest."""
    allocator, tree = _new_cache()
    slots, _ = _insert_fresh(allocator, tree, [1, 2, 3, 4, 5, 6])

    match = tree.match_prefix([1, 2, 3, 9])
    assert match.indices.tolist() == slots[:3]
    assert _path(match.node) == ([1, 2, 3], slots[:3])
    assert len(_path(match.node)[0]) == match.indices.numel()

    assert list(tree.root.children.values()) == [match.node]
    (lower,) = match.node.children.values()
    assert lower.key == [4, 5, 6]
    assert lower.value.tolist() == slots[3:]
    assert lower.parent is match.node
    assert tree.evictable_size == 6
    assert tree.match_prefix([1, 2, 3, 4, 5, 6]).indices.tolist() == slots


def test_split_of_a_locked_edge_keeps_the_lock_on_both_halves():
    """Splitting a locked node must not change the protected size, and unlocking the original
    (lower) node afterwards unlocks the whole path."""
    allocator, tree = _new_cache()
    _insert_fresh(allocator, tree, [1, 2, 3, 4, 5, 6])
    node = tree.match_prefix([1, 2, 3, 4, 5, 6]).node
    tree.lock(node)
    upper = tree.match_prefix([1, 2, 3]).node
    assert upper is not node and node.parent is upper
    assert upper.lock_ref == node.lock_ref == 1
    assert tree.protected_size == 6 and tree.evictable_size == 0
    tree.unlock(node)
    assert upper.lock_ref == node.lock_ref == 0
    assert tree.protected_size == 0 and tree.evictable_size == 6


# --- RadixCache: locking and eviction -------------------------------------------------------


def test_lock_and_unlock_move_tokens_between_evictable_and_protected():
    """Locking a node protects its whole path (and only it); locks are counted, so the path
    becomes evictable again only when the last lock is released."""
    allocator, tree = _new_cache()
    _insert_fresh(allocator, tree, [1, 2, 3, 4])
    _insert_fresh(allocator, tree, [1, 2, 5, 6])
    node = tree.match_prefix([1, 2, 3, 4]).node
    assert (tree.evictable_size, tree.protected_size) == (6, 0)

    tree.lock(node)
    assert (tree.evictable_size, tree.protected_size) == (2, 4)
    tree.lock(node)
    assert (tree.evictable_size, tree.protected_size) == (2, 4)
    assert node.lock_ref == node.parent.lock_ref == 2
    tree.unlock(node)
    assert (tree.evictable_size, tree.protected_size) == (2, 4)
    tree.unlock(node)
    assert (tree.evictable_size, tree.protected_size) == (6, 0)
    assert node.lock_ref == node.parent.lock_ref == 0


def test_evict_never_frees_a_locked_path():
    """With a path locked, evict frees only the unlocked part even when asked for everything,
    and the locked prefix still matches with the same slots."""
    allocator, tree = _new_cache()
    kept, _ = _insert_fresh(allocator, tree, [1, 2, 3, 4])
    other, _ = _insert_fresh(allocator, tree, [1, 2, 5, 6])
    node = tree.match_prefix([1, 2, 3, 4]).node
    tree.lock(node)

    free_before = allocator.available
    assert tree.evict(100) == 2
    assert allocator.available == free_before + 2
    assert sorted(_free_in_reuse_order(allocator)[-2:]) == sorted(other[2:])
    assert (tree.evictable_size, tree.protected_size) == (0, 4)
    match = tree.match_prefix([1, 2, 3, 4])
    assert match.node is node
    assert match.indices.tolist() == kept
    assert tree.evict(100) == 0

    tree.unlock(node)
    assert tree.evict(100) == 4
    assert tree.total_size == 0
    assert allocator.available == allocator.size


def test_evict_frees_least_recently_used_leaf_first():
    """Eviction order is LRU over leaves, where both insert and match count as a use."""
    allocator, tree = _new_cache()
    a, _ = _insert_fresh(allocator, tree, [1, 1])
    b, _ = _insert_fresh(allocator, tree, [2, 2])
    c, _ = _insert_fresh(allocator, tree, [3, 3])
    d, _ = _insert_fresh(allocator, tree, [4, 4])
    tree.match_prefix([1, 1, 0])  # a is now more recent than b, c and d
    _insert_fresh(allocator, tree, [2, 2])  # b too (nothing new is stored)

    assert tree.evict(1) == 2  # one whole leaf, even though one token was asked for
    assert _free_in_reuse_order(allocator)[-2:] == c
    assert set(tree.root.children) == {1, 2, 4}
    assert tree.evict(3) == 4
    assert set(tree.root.children) == {2}  # d, then a went; b was used last
    assert tree.match_prefix([2, 2]).indices.tolist() == b
    assert sorted(_free_in_reuse_order(allocator)[-4:]) == sorted(a + d)


def test_evicting_a_leaf_makes_its_parent_evictable_once_childless():
    """When eviction removes the last child of an unlocked node, that node becomes a leaf and is
    evicted in turn (in the same call if more tokens are needed); a node that still has a child
    stays."""
    allocator, tree = _new_cache()
    _insert_fresh(allocator, tree, [1, 2, 3])
    _insert_fresh(allocator, tree, [1, 2, 3, 4, 5])
    assert tree.evict(1) == 2  # only the leaf [4, 5] was a candidate
    assert tree.match_prefix([1, 2, 3, 4, 5]).indices.numel() == 3
    assert tree.evict(1) == 3  # [1, 2, 3] is now a childless unlocked leaf
    assert tree.total_size == 0 and not tree.root.children

    _insert_fresh(allocator, tree, [1, 2, 3])
    _insert_fresh(allocator, tree, [1, 2, 3, 4, 5])
    assert tree.evict(5) == 5  # cascade within a single call
    assert not tree.root.children

    _insert_fresh(allocator, tree, [1, 2, 3, 4])
    _insert_fresh(allocator, tree, [1, 2, 5, 6])
    tree.match_prefix([1, 2, 5, 6])  # [3, 4] is the LRU leaf
    assert tree.evict(1) == 2
    (parent,) = tree.root.children.values()
    assert parent.key == [1, 2] and list(parent.children) == [5]
    assert tree.evictable_size == 4
    assert allocator.available + tree.total_size == allocator.size


def test_evicting_the_last_child_of_a_locked_node_keeps_the_node():
    """A childless parent that is locked is not evicted."""
    allocator, tree = _new_cache()
    _insert_fresh(allocator, tree, [1, 2, 3, 4])
    parent = tree.match_prefix([1, 2]).node
    tree.lock(parent)
    assert tree.evict(100) == 2
    assert tree.root.children[1] is parent and not parent.children
    assert (tree.evictable_size, tree.protected_size) == (0, 2)


def test_unlock_of_an_unlocked_node_raises():
    """Unlocking a node that holds no lock is a caller bug and raises without changing sizes."""
    allocator, tree = _new_cache()
    _insert_fresh(allocator, tree, [1, 2, 3])
    node = tree.match_prefix([1, 2, 3]).node
    with pytest.raises(RuntimeError):
        tree.unlock(node)
    tree.lock(node)
    tree.unlock(node)
    with pytest.raises(RuntimeError):
        tree.unlock(node)
    assert (tree.evictable_size, tree.protected_size) == (3, 0)
    assert node.lock_ref == 0


def test_reset_forgets_every_node():
    """reset drops the whole tree and zeroes both sizes (the caller clears the allocator)."""
    allocator, tree = _new_cache()
    _insert_fresh(allocator, tree, [1, 2, 3])
    tree.reset()
    allocator.clear()
    assert not tree.root.children and tree.total_size == 0
    assert tree.match_prefix([1, 2, 3]).node is tree.root
    assert allocator.available == allocator.size


# --- property-based: the runtime's usage, randomised ----------------------------------------

MAX_TOKENS = 12  # longest request
MAX_RUNNING = 10  # in-flight requests; with 12 tokens each this can exhaust a small pool
tokens_strategy = st.lists(st.integers(0, 3), min_size=1, max_size=MAX_TOKENS)


@dataclass
class _Running:
    """An in-flight request, as the CacheManager sees it.

    slots[:cached_len] are tree slots, protected by locking `node` (whose path spells
    tokens[:cached_len]); slots[cached_len:] are the request's own, not yet given to the tree.
    """

    tokens: list[int]
    slots: list[int]
    cached_len: int
    node: TreeNode

    @property
    def kv_len(self) -> int:
        return len(self.slots)

    @property
    def own_slots(self) -> list[int]:
        return self.slots[self.cached_len :]


class RadixCacheMachine(RuleBasedStateMachine):
    """Random interleavings of request admission, chunked extension, progress sharing, release,
    matching, eviction and flushing over a small pool and a small token alphabet."""

    def __init__(self):
        super().__init__()
        self.allocator = SlotAllocator(1)
        self.tree = RadixCache(self.allocator)
        self.running: list[_Running] = []

    @initialize(pool_size=st.one_of(st.integers(16, 40), st.integers(64, 160)))
    def make_pool(self, pool_size):
        self.allocator = SlotAllocator(pool_size)
        self.tree = RadixCache(self.allocator)

    # --- helpers mirroring CacheManager ---------------------------------------------------

    def _alloc_slots(self, n: int) -> list[int] | None:
        """CacheManager.alloc_slots: evict just enough LRU cache first, then allocate."""
        free_before, evictable_before = self.allocator.available, self.tree.evictable_size
        if n > free_before:
            self._evict_and_check(n - free_before)
        slots = self.allocator.alloc(n)
        if slots is None:
            # only when the pool is truly exhausted: all evictable cache is already gone
            assert self.tree.evictable_size == 0
            assert free_before + evictable_before < n
            return None
        assert slots.numel() == n
        return slots.tolist()

    def _evict_and_check(self, num_tokens: int) -> None:
        """tree.evict, checking that it frees whole unlocked nodes, least recently used first,
        until enough is freed or nothing evictable is left, giving their slots to the allocator."""
        free_before, evictable_before = self.allocator.available, self.tree.evictable_size
        protected_before = self.tree.protected_size
        nodes_before = {id(node): node for node in _nodes(self.tree)}
        freed = self.tree.evict(num_tokens)
        nodes_after = {id(node): node for node in _nodes(self.tree)}
        evicted = [node for key, node in nodes_before.items() if key not in nodes_after]
        assert all(node.lock_ref == 0 for node in evicted)
        assert freed == sum(len(node.key) for node in evicted)
        assert freed == evictable_before - self.tree.evictable_size
        assert self.allocator.available == free_before + freed
        assert self.tree.protected_size == protected_before
        assert freed >= min(num_tokens, evictable_before)
        assert freed == 0 or freed < num_tokens + MAX_TOKENS  # stops once enough was freed
        remaining_leaves = [
            node for node in nodes_after.values() if not node.children and node.lock_ref == 0
        ]
        if evicted and remaining_leaves:
            newest_evicted = max(node.last_access for node in evicted)
            assert newest_evicted <= min(node.last_access for node in remaining_leaves)

    def _pick(self, index: int, candidates: list[_Running]) -> _Running:
        return candidates[index % len(candidates)]

    def _check_match_path(self, key: list[int], match: MatchResult) -> int:
        """The returned node ends exactly at the match and its path spells the matched tokens
        with the returned slots; the match is maximal. Returns the match length."""
        matched = match.indices.numel()
        assert _path(match.node) == (list(key[:matched]), match.indices.tolist())
        assert matched == len(key) or key[matched] not in match.node.children
        return matched

    def _release(self, req: _Running) -> None:
        """CacheManager.release: give the KV to the tree, free duplicates, unlock the prefix."""
        key = req.tokens[: req.kv_len]
        inserted = self.tree.insert(key, _tensor(req.slots))
        assert inserted.prefix_len >= req.cached_len  # the locked prefix was still there
        assert _path(inserted.node)[0] == key
        self.allocator.free(_tensor(req.slots[req.cached_len : inserted.prefix_len]))
        self.tree.unlock(req.node)
        self.running.remove(req)

    # --- rules --------------------------------------------------------------------------

    @precondition(lambda self: len(self.running) < MAX_RUNNING)
    @rule(tokens=tokens_strategy, chunk=st.integers(1, MAX_TOKENS))
    def start_request(self, tokens, chunk):
        """Match the prompt (leaving one token to compute), lock the match, allocate the first
        chunk of the rest; give up (unlock) if even eviction cannot provide the slots."""
        match = self.tree.match_prefix(tokens[:-1])
        matched = self._check_match_path(tokens[:-1], match)
        self.tree.lock(match.node)
        n = min(chunk, len(tokens) - matched)
        own = self._alloc_slots(n)
        if own is None:
            self.tree.unlock(match.node)
            return
        prefix = match.indices.tolist()
        self.running.append(_Running(tokens, prefix + own, matched, match.node))

    @precondition(lambda self: any(r.kv_len < len(r.tokens) for r in self.running))
    @rule(index=st.integers(0, MAX_RUNNING - 1), chunk=st.integers(1, MAX_TOKENS))
    def extend_request(self, index, chunk):
        """Allocate the next chunk of a partially computed request; if the pool is exhausted,
        retract it (its KV goes to the tree, like a retracted request's)."""
        req = self._pick(index, [r for r in self.running if r.kv_len < len(r.tokens)])
        own = self._alloc_slots(min(chunk, len(req.tokens) - req.kv_len))
        if own is None:
            self._release(req)
        else:
            req.slots += own

    @precondition(lambda self: self.running)
    @rule(index=st.integers(0, MAX_RUNNING - 1))
    def share_progress(self, index):
        """CacheManager.cache_unfinished: insert what the request computed so far, free its
        duplicates, lock the longer match and unlock the old one; the request keeps running."""
        req = self._pick(index, self.running)
        key = req.tokens[: req.kv_len]
        inserted = self.tree.insert(key, _tensor(req.slots))
        assert inserted.prefix_len >= req.cached_len
        self.allocator.free(_tensor(req.slots[req.cached_len : inserted.prefix_len]))
        match = self.tree.match_prefix(key)
        assert self._check_match_path(key, match) == req.kv_len
        assert match.indices.tolist()[: req.cached_len] == req.slots[: req.cached_len]
        assert match.indices.tolist()[inserted.prefix_len :] == req.slots[inserted.prefix_len :]
        self.tree.lock(match.node)
        self.tree.unlock(req.node)
        req.slots, req.cached_len, req.node = match.indices.tolist(), req.kv_len, match.node

    @precondition(lambda self: self.running)
    @rule(index=st.integers(0, MAX_RUNNING - 1))
    def finish_request(self, index):
        """A request finishes (or is aborted): release it into the tree."""
        self._release(self._pick(index, self.running))

    @rule(key=tokens_strategy)
    def match_random_key(self, key):
        """Any match returns a maximal prefix whose node path spells it with its slots."""
        self._check_match_path(key, self.tree.match_prefix(key))

    @precondition(lambda self: self.running)
    @rule(index=st.integers(0, MAX_RUNNING - 1))
    def match_running_request(self, index):
        """A running request's tokens still match at least its locked prefix, same slots."""
        req = self._pick(index, self.running)
        match = self.tree.match_prefix(req.tokens)
        matched = self._check_match_path(req.tokens, match)
        assert matched >= req.cached_len
        assert match.indices.tolist()[: req.cached_len] == req.slots[: req.cached_len]

    @rule(num_tokens=st.integers(0, 16))
    def evict(self, num_tokens):
        """Evict some cache directly (the runtime's allocation path evicts too)."""
        self._evict_and_check(num_tokens)

    @precondition(lambda self: not self.running and self.tree.total_size > self.allocator.size // 2)
    @rule()
    def flush(self):
        """CacheManager.flush with no request in flight: everything is free again. Only done on
        a well-filled cache (not whenever idle) so the tree usually grows to eviction pressure."""
        self.tree.reset()
        self.allocator.clear()
        assert self.allocator.available == self.allocator.size

    # --- invariants ---------------------------------------------------------------------

    @invariant()
    def every_slot_is_owned_exactly_once(self):
        """free + evictable + protected + own slots of running requests == pool size, and the
        free list, the tree's values and the running requests' own slots partition 1..size."""
        own = [slot for req in self.running for slot in req.own_slots]
        assert (
            self.allocator.available
            + self.tree.evictable_size
            + self.tree.protected_size
            + len(own)
            == self.allocator.size
        )
        owners = _free_in_reuse_order(self.allocator) + self.tree.all_slots().tolist() + own
        assert sorted(owners) == list(range(1, self.allocator.size + 1))

    @invariant()
    def sizes_match_the_tree(self):
        """evictable_size counts the tokens of unlocked nodes, protected_size of locked ones."""
        nodes = _nodes(self.tree)
        assert self.tree.evictable_size == sum(len(n.key) for n in nodes if n.lock_ref == 0)
        assert self.tree.protected_size == sum(len(n.key) for n in nodes if n.lock_ref > 0)
        assert self.tree.evictable_size + self.tree.protected_size == sum(len(n.key) for n in nodes)

    @invariant()
    def tree_is_well_formed(self):
        """Every edge is non-empty with one int64 slot per token, is keyed in its parent by its
        first token and points back to that parent."""
        assert self.tree.root.lock_ref == 1 and self.tree.root.parent is None
        for parent in [self.tree.root, *_nodes(self.tree)]:
            for first_token, child in parent.children.items():
                assert child.key and len(child.key) == child.value.numel()
                assert child.value.dtype == torch.int64 and child.value.dim() == 1
                assert first_token == child.key[0]
                assert child.parent is parent

    @invariant()
    def lock_refs_count_running_requests_below(self):
        """Each node's lock_ref is the number of running requests locking a node in its
        subtree, so exactly the paths of running requests are protected."""
        expected: Counter[int] = Counter()
        for req in self.running:
            node = req.node
            while node is not self.tree.root:
                expected[id(node)] += 1
                node = node.parent
        for node in _nodes(self.tree):
            assert node.lock_ref == expected[id(node)]

    @invariant()
    def locked_prefixes_are_never_evicted(self):
        """Each running request's locked node is still in the tree and its path spells the
        request's cached tokens with the exact slots the request uses for them."""
        for req in self.running:
            assert _is_attached(self.tree, req.node)
            assert _path(req.node) == (req.tokens[: req.cached_len], req.slots[: req.cached_len])


RadixCacheMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_radix_cache_state_machine = RadixCacheMachine.TestCase
