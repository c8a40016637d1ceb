"""A flat copy of the radix tree at one moment, for views of the cache (the dashboard).

`take_snapshot` must run on the thread that owns the tree (the scheduler's, between two steps:
`Engine.cache_snapshot` sends it there with `Scheduler.call`), so the copy is consistent: every
count and lock in it belongs to the same moment. It does the least work that gives that: one
tuple of scalars per node, in depth-first preorder, plus a reference to the node's edge key (the
tree never changes a key list in place; see radix_cache.py). On 10,000 nodes it holds the
scheduler for a few milliseconds (benchmarks/bench_cache_tree.py measures it).

Everything else -- parents, subtree totals, hashes, text -- is derived from the copy later, on
the caller's thread, while the scheduler runs on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

from radixgen.runtime.cache.radix_cache import RadixCache


class NodeRow(NamedTuple):
    """One node as the snapshot saw it. The snapshot stores plain tuples in this order (a named
    tuple costs three times as much to build on the scheduler thread); `TreeSnapshot.row` and
    `columns` name them."""

    key: list[int]  # the edge's token ids (the tree's own list: read it, never change it)
    locks: int  # running requests whose prefix passes through the node
    hits: int  # requests that reused the node's KV
    used_at: float  # time.monotonic() of its last use
    num_children: int


@dataclass(frozen=True)
class TreeSnapshot:
    """`rows[0]` is the root (an empty key); every node's subtree follows it (preorder), its
    children's subtrees one after another."""

    rows: list[tuple]  # NodeRow's fields, in its order
    taken_at: float  # time.monotonic() when taken (the clock of `NodeRow.used_at`)
    hold_seconds: float  # how long the copy held the tree's thread
    evictable_tokens: int
    protected_tokens: int

    def row(self, index: int) -> NodeRow:
        return NodeRow._make(self.rows[index])

    def columns(self) -> NodeRow:
        """The rows as columns: `columns().key[i]` is row i's key, and so on."""
        return NodeRow._make(map(list, zip(*self.rows, strict=True)))

    def parents(self) -> list[int]:
        """Each row's parent row (-1 for the root), rebuilt from the preorder and the child
        counts."""
        parents = [-1] * len(self.rows)
        open_nodes: list[list[int]] = []  # [row, children not yet seen], innermost last
        for index, row in enumerate(self.rows):
            num_children = row[4]
            if open_nodes:
                top = open_nodes[-1]
                parents[index] = top[0]
                top[1] -= 1
                if top[1] == 0:
                    open_nodes.pop()
            if num_children:
                open_nodes.append([index, num_children])
        return parents


def take_snapshot(tree: RadixCache) -> TreeSnapshot:
    """Copy `tree`; call it on the thread that owns the tree (see the module docstring)."""
    started = time.perf_counter()
    rows: list[tuple] = []
    append = rows.append
    stack = [tree.root]
    pop, extend = stack.pop, stack.extend
    while stack:  # iterative: a deep tree must not hit the recursion limit
        node = pop()
        children = node.children
        append((node.key, node.lock_ref, node.hits, node.used_at, len(children)))
        extend(children.values())
    return TreeSnapshot(
        rows=rows,
        taken_at=time.monotonic(),
        hold_seconds=time.perf_counter() - started,
        evictable_tokens=tree.evictable_size,
        protected_tokens=tree.protected_size,
    )
