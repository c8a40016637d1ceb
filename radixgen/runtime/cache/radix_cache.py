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

Sliding windows. With a hybrid pool (`SwaSlotAllocator`) a token's window KV (its sliding-window
layers' K/V) may be freed while its global layers' KV stays: a *tombstone*. A cached prefix is then
usable only up to a point whose last `window - 1` tokens are live (`window_usable_len`): the first
new token's sliding-window layers read exactly those. `evict_swa` frees window KV under pressure,
LRU first, and only what no running request's window sees: first what lies more than a window
before every branch point and leaf end below it, then an unlocked leaf whole (its
global KV alone serves no one) and the rest of any other node. `insert` revives tombstones from
the fresh copy a request computed of the same tokens.

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
from radixgen.runtime.cache.swa_allocator import SwaSlotAllocator

_EMPTY = torch.empty(0, dtype=torch.int64)


class TreeNode:
    __slots__ = (
        "children",
        "parent",
        "key",
        "value",
        "lock_ref",
        "last_access",
        "hits",
        "used_at",
        "anchor",
    )

    def __init__(self, key: list[int], value: torch.Tensor, parent: TreeNode | None):
        self.children: dict[int, TreeNode] = {}
        self.parent = parent
        self.key = key  # token ids on the edge from parent to this node
        self.value = value  # [len(key)] int64 KV slots of those tokens
        self.lock_ref = 0
        self.last_access = 0  # logical clock: the LRU order
        self.hits = 0  # requests that reused this node's KV (`record_hit`)
        self.used_at = 0.0  # time.monotonic() of the last match or insert through this node
        self.anchor = False  # a request's prompt ended here: a likely branch point (`anchor`)

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
    def __init__(self, allocator: SlotAllocator | SwaSlotAllocator):
        self.allocator = allocator
        self._swa = allocator if isinstance(allocator, SwaSlotAllocator) else None
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
            if self._swa is not None:  # tombstones of the tree, fresh in the caller's copy
                self._swa.adopt_swa(child.value, value[pos : pos + matched])
            node, pos = child, pos + matched
        if pos < len(key):
            leaf = TreeNode(list(key[pos:]), value[pos:].clone(), node)
            leaf.last_access, leaf.used_at = now, now_s
            node.children[key[pos]] = leaf
            self.evictable_size += len(leaf.key)
            node = leaf
        return InsertResult(pos, node)

    def anchor(self, key: Sequence[int]) -> None:
        """Mark the end of `key` (cached) as a likely branch point, making it a node end: a
        finished request's prompt end, where a regenerated answer or the next turn of a replayed
        conversation parts from it. SWA eviction keeps a window before it (`evict_swa`)."""
        if key:
            self.match_prefix(key).node.anchor = True

    def window_usable_len(self, indices: torch.Tensor, window: int) -> int:
        """How much of a matched prefix (its slots, [n]) a request may reuse when its
        sliding-window layers see `window` positions: the longest prefix whose last
        `window - 1` tokens all have live window KV (every prefix up to the first tombstone
        qualifies). Without a hybrid pool, all of it."""
        n = int(indices.shape[0])
        if self._swa is None or n == 0:
            return n
        dead = (~self._swa.live(indices)).nonzero().flatten()  # [d] tombstone positions
        if dead.numel() == 0:
            return n
        # live runs [starts[i], ends[i]): before the first tombstone, between two, after the last
        ends = torch.cat((dead, torch.tensor([n])))
        starts = torch.cat((torch.tensor([0]), dead + 1))
        usable = (starts == 0) | (ends - starts >= window - 1)
        return int(ends[usable].max())

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
            freed += len(leaf.key)
            parent = self._remove_leaf(leaf)
            if parent is not None:
                heapq.heappush(leaves, parent)
        return freed

    def evict_swa(self, num_tokens: int, protected: torch.Tensor, window: int) -> int:
        """Free at least `num_tokens` SWA slots (fewer if not enough can go); never a token
        marked in `protected` ([size + 1] bool: slots some running request's window still sees)
        unless its whole unlocked leaf goes. Returns the number of SWA slots freed.

        Two passes over the nodes, least recently used first. The first frees only tokens more
        than `window - 1` before every branch point, anchor and leaf end below them, so each
        place where cached sequences part (or likely will) stays a usable match. The second
        drops unlocked leaves whole (their global KV alone serves no one) and tombstones the
        rest of any other node. Only for a hybrid pool."""
        if self._swa is None:
            raise RuntimeError("evict_swa needs a hybrid pool (SwaSlotAllocator)")
        freed = 0
        keep = self._window_tails(window)
        for node in sorted(keep):
            if freed >= num_tokens:
                return freed
            head = node.value[: max(len(node.key) - keep[node], 0)]
            freed += self._swa.free_swa(head[~protected[head]])
        nodes = list(self._iter_nodes())
        heapq.heapify(nodes)
        while freed < num_tokens and nodes:
            node = heapq.heappop(nodes)
            if node.parent is None:  # removed from the tree meanwhile
                continue
            if node.children or node.lock_ref:
                freed += self._swa.free_swa(node.value[~protected[node.value]])
                continue
            freed += int(self._swa.live(node.value).sum())
            parent = self._remove_leaf(node)
            if parent is not None:  # became an unlocked leaf: evictable whole now
                heapq.heappush(nodes, parent)
        return freed

    def _window_tails(self, window: int) -> dict[TreeNode, int]:
        """Per node: how many of its last tokens lie within `window - 1` tokens before the end
        of a leaf or branch point at or below it (may exceed its length: the rest is its
        parent's). A node with one child (a prompt inserted chunk by chunk) is no branch unless
        it is an anchor."""
        tails: dict[TreeNode, int] = {}
        for node in reversed(list(self._iter_nodes())):  # children before their parents
            tail = window - 1 if len(node.children) != 1 or node.anchor else 0
            for child in node.children.values():
                tail = max(tail, tails[child] - len(child.key))
            tails[node] = tail
        return tails

    def _remove_leaf(self, leaf: TreeNode) -> TreeNode | None:
        """Evict an unlocked leaf (free its slots); returns its parent if that is an unlocked
        leaf now."""
        parent = leaf.parent
        self.allocator.free(leaf.value)
        self.evictable_size -= len(leaf.key)
        self.evicted_tokens += len(leaf.key)
        del parent.children[leaf.key[0]]
        leaf.parent = None
        if parent is not self.root and not parent.children and parent.lock_ref == 0:
            return parent
        return None

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
