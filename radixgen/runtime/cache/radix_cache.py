"""RadixCache: a radix tree over token ids whose values are KV slot indices (RadixAttention).

Every edge holds a run of token ids (`key`) and the KV slots of those tokens (`value`, same
length). A path from the root spells a token sequence whose KV is stored in the pool, so any new
sequence can reuse the KV of its longest cached prefix.

Ownership and accounting. Slots stored in the tree belong to the tree. Each node has a
`lock_ref`: the number of running requests whose matched prefix passes through it. Locking a node
locks its whole path to the root. Locked nodes are *protected*; unlocked nodes are *evictable*.
`evict` frees the least recently used unlocked leaves back to the allocator.

    evictable_size + protected_size == total tokens stored in the tree

and, when no request is running, `allocator.available + evictable + protected == pool size`.

Edge keys are never changed in place: a split gives both halves new lists. A reader that took a
node's `key` on the scheduler thread (tree_snapshot.py) may therefore keep reading that list
elsewhere while the tree goes on changing.

The tree knows token ids and index tensors only, never the request class.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Sequence
from typing import NamedTuple

import torch

from radixgen.runtime.cache.kv_pool import SlotAllocator

_EMPTY = torch.empty(0, dtype=torch.int64)


class TreeNode:
    __slots__ = ("children", "parent", "key", "value", "lock_ref", "last_access", "hits", "used_at")

    def __init__(self, key: list[int], value: torch.Tensor, parent: TreeNode | None):
        self.children: dict[int, TreeNode] = {}
        self.parent = parent
        self.key = key  # token ids on the edge from parent to this node
        self.value = value  # [len(key)] int64 KV slots of those tokens
        self.lock_ref = 0
        self.last_access = 0  # logical clock: the LRU order
        self.hits = 0  # requests that reused this node's KV (`record_hit`)
        self.used_at = 0.0  # time.monotonic() of the last match or insert through this node

    def __lt__(self, other: TreeNode) -> bool:
        return self.last_access < other.last_access


class MatchResult(NamedTuple):
    indices: torch.Tensor  # [matched_len] KV slots of the longest cached prefix
    node: TreeNode  # deepest node of the match; lock it to keep the prefix alive


class InsertResult(NamedTuple):
    prefix_len: int  # leading tokens that were already in the tree (caller frees its copies)
    node: TreeNode  # node ending the inserted sequence


def _common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the usual case, a whole edge, compared at C speed
        return n
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class RadixCache:
    def __init__(self, allocator: SlotAllocator):
        self.allocator = allocator
        self._clock = itertools.count(1)
        self.evicted_tokens = 0  # slots `evict` ever freed (a counter: `reset` keeps it)
        self.reset()

    def reset(self) -> None:
        """Forget every node. Slots held by the tree are NOT freed: callers clear the allocator."""
        self.root = TreeNode([], _EMPTY, None)
        self.root.lock_ref = 1  # the root is never evicted
        self.evictable_size = 0
        self.protected_size = 0

    @property
    def total_size(self) -> int:
        return self.evictable_size + self.protected_size

    # --- lookup and insertion ------------------------------------------------------------

    def match_prefix(self, key: Sequence[int]) -> MatchResult:
        """Longest cached prefix of `key`.

        Mutates the tree: when the match ends inside an edge, that node is split so the returned
        node ends exactly at the match; nodes on the path get a fresh access time.
        """
        node, pos, parts = self.root, 0, []
        now, now_s = next(self._clock), time.monotonic()
        while pos < len(key) and key[pos] in node.children:
            child = node.children[key[pos]]
            child.last_access, child.used_at = now, now_s
            matched = _common_prefix_len(child.key, key[pos : pos + len(child.key)])
            ends_inside = matched < len(child.key)
            if ends_inside:
                child = self._split(child, matched)
            parts.append(child.value)
            node, pos = child, pos + matched
            if ends_inside:
                break
        indices = torch.cat(parts) if parts else _EMPTY
        return MatchResult(indices, node)

    def insert(self, key: Sequence[int], value: torch.Tensor) -> InsertResult:
        """Add `key` with KV slots `value` ([len(key)]). The tree takes ownership of the slots of
        the part that was new; for the first `prefix_len` tokens the tree keeps its own slots and
        the caller must free (or stop using) the duplicates it passed in."""
        node, pos = self.root, 0
        now, now_s = next(self._clock), time.monotonic()
        while pos < len(key) and key[pos] in node.children:
            child = node.children[key[pos]]
            child.last_access, child.used_at = now, now_s
            matched = _common_prefix_len(child.key, key[pos : pos + len(child.key)])
            if matched < len(child.key):
                child = self._split(child, matched)
            node, pos = child, pos + matched
        if pos < len(key):
            leaf = TreeNode(list(key[pos:]), value[pos:].clone(), node)
            leaf.last_access, leaf.used_at = now, now_s
            node.children[key[pos]] = leaf
            self.evictable_size += len(leaf.key)
            node = leaf
        return InsertResult(pos, node)

    def _split(self, child: TreeNode, at: int) -> TreeNode:
        """Split `child`'s edge after `at` tokens; return the new upper node."""
        upper = TreeNode(child.key[:at], child.value[:at], child.parent)
        upper.lock_ref = child.lock_ref
        upper.last_access, upper.used_at = child.last_access, child.used_at
        upper.hits = child.hits
        upper.children = {child.key[at]: child}
        child.parent.children[child.key[0]] = upper
        child.parent = upper
        child.key = child.key[at:]
        child.value = child.value[at:]
        return upper

    def record_hit(self, node: TreeNode) -> None:
        """One more request reuses the KV of the path root..node (counted per node, for the
        dashboard; prefix matches made only to order the queue are not hits)."""
        while node is not self.root:
            node.hits += 1
            node = node.parent

    # --- locking -------------------------------------------------------------------------

    def lock(self, node: TreeNode) -> None:
        """Protect the path root..node from eviction (one more running request uses it)."""
        while node is not self.root:
            if node.lock_ref == 0:
                self.evictable_size -= len(node.key)
                self.protected_size += len(node.key)
            node.lock_ref += 1
            node = node.parent

    def unlocked_len(self, node: TreeNode) -> int:
        """Tokens on the path root..node that no running request locks: counted in
        `evictable_size` now, and no longer once the path is locked."""
        total = 0
        while node is not self.root and node.lock_ref == 0:  # a locked node's parents are too
            total += len(node.key)
            node = node.parent
        return total

    def unlock(self, node: TreeNode) -> None:
        while node is not self.root:
            if node.lock_ref <= 0:
                raise RuntimeError("unlock of a node that is not locked")
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self.protected_size -= len(node.key)
                self.evictable_size += len(node.key)
            node = node.parent

    # --- eviction ------------------------------------------------------------------------

    def evict(self, num_tokens: int) -> int:
        """Free at least `num_tokens` slots from LRU unlocked leaves (fewer if not enough are
        evictable). Returns the number of slots freed."""
        leaves = [n for n in self._iter_nodes() if not n.children and n.lock_ref == 0]
        heapq.heapify(leaves)
        freed = 0
        while freed < num_tokens and leaves:
            leaf = heapq.heappop(leaves)
            parent = leaf.parent
            self.allocator.free(leaf.value)
            freed += len(leaf.key)
            self.evictable_size -= len(leaf.key)
            del parent.children[leaf.key[0]]
            if parent is not self.root and not parent.children and parent.lock_ref == 0:
                heapq.heappush(leaves, parent)
        self.evicted_tokens += freed
        return freed

    def _iter_nodes(self):
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    def all_slots(self) -> torch.Tensor:
        """Every slot held by the tree (for consistency checks)."""
        values = [n.value for n in self._iter_nodes()]
        return torch.cat(values) if values else _EMPTY
