"""A flat copy of the radix tree at one moment, for views of the cache (the dashboard).

`take_snapshot` must run on the thread that owns the tree (the scheduler's, between two steps:
`Engine.cache_snapshot` sends it there with `Scheduler.call`), so the copy is consistent: every
count and lock in it belongs to the same moment. It does the least work that gives that: a few
scalars per node, in depth-first preorder, plus a reference to the node's edge key (the
tree never changes a key list in place; see radix_cache.py). On 10,000 nodes it holds the
scheduler for a few milliseconds (benchmarks/bench_cache_tree.py measures it).

Everything else -- parents, subtree totals, hashes, text -- is derived from the copy later, on
the caller's thread, while the scheduler runs on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from radixgen.runtime.cache.radix_cache import RadixCache


@dataclass(frozen=True)
class TreeSnapshot:
    """The tree as columns, one entry per node in depth-first preorder: entry 0 is the root (an
    empty key), and every node's subtree follows it, its children's subtrees one after another.

    Columns rather than a tuple per node: building them allocates no object the garbage collector
    tracks (the ints and floats are untracked, the keys are the tree's own lists), so a snapshot
    neither triggers a collection while it holds the scheduler nor hastens the next full one.
    """

    keys: list[list[int]]  # each edge's token ids (the tree's own lists: read, never change)
    locks: list[int]  # running requests whose prefix passes through the node
    hits: list[int]  # requests that reused the node's KV
    used_at: list[float]  # time.monotonic() of the node's last use
    num_children: list[int]
    taken_at: float  # time.monotonic() when taken (the clock of `used_at`)
    hold_seconds: float  # how long the copy held the tree's thread
    evictable_tokens: int
    protected_tokens: int

    def structure(self) -> tuple[list[int], list[int]]:
        """(parents, ends) from the preorder and the child counts: node i's parent index (-1 for
        the root), and the end of its subtree, which is the range [i, ends[i]). One pass; the
        lists hold ints only."""
        count = len(self.num_children)
        parents, ends = [-1] * count, [0] * count
        open_nodes: list[int] = []  # the path to the current node: nodes with children to come
        remaining: list[int] = []  # how many children each of them still has to close
        for index, num_children in enumerate(self.num_children):
            if open_nodes:
                parents[index] = open_nodes[-1]
            if num_children:
                open_nodes.append(index)
                remaining.append(num_children)
                continue
            ends[index] = end = index + 1  # a leaf closes at once, and closes every ancestor
            while open_nodes:  # whose last child it was
                remaining[-1] -= 1
                if remaining[-1]:
                    break
                ends[open_nodes.pop()] = end
                remaining.pop()
        return parents, ends


def take_snapshot(tree: RadixCache) -> TreeSnapshot:
    """Copy `tree`; call it on the thread that owns the tree (see the module docstring)."""
    started = time.perf_counter()
    keys: list[list[int]] = []
    locks: list[int] = []
    hits: list[int] = []
    used_at: list[float] = []
    num_children: list[int] = []
    add_key, add_lock, add_hits = keys.append, locks.append, hits.append
    add_used, add_children = used_at.append, num_children.append
    stack = [tree.root]
    pop, extend = stack.pop, stack.extend
    while stack:  # iterative: a deep tree must not hit the recursion limit
        node = pop()
        children = node.children
        add_key(node.key)
        add_lock(node.lock_ref)
        add_hits(node.hits)
        add_used(node.used_at)
        add_children(len(children))
        extend(children.values())
    return TreeSnapshot(
        keys=keys,
        locks=locks,
        hits=hits,
        used_at=used_at,
        num_children=num_children,
        taken_at=time.monotonic(),
        hold_seconds=time.perf_counter() - started,
        evictable_tokens=tree.evictable_size,
        protected_tokens=tree.protected_size,
    )
