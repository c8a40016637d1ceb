"""The `/cache_tree` document: a radix-tree snapshot as nested JSON, bounded in size.

A tree of any size becomes at most `max_nodes` shown nodes. Nodes are admitted heaviest first
(most tokens in their subtree) and only below an admitted parent, so the biggest shared prefixes
always show; a node deeper than `depth`, with fewer than `min_tokens` tokens in its subtree, or
past the budget is folded, with its whole subtree, into its parent's `hidden` summary. Totals
always cover the whole tree.

Privacy: a node is named by a short hash of its whole prefix (salted with a secret of the server
process, so the hash of a guessed prompt cannot be computed elsewhere and names change across
restarts). Text appears only when the caller passes `decode` (the server's
`--dashboard-show-text`); then each shown node carries a snippet of its own edge.

The document (docs/dashboard.md has the field-by-field description):

    {"object": "cache_tree", "nodes", "tokens", "evictable_tokens", "protected_tokens",
     "shown_nodes", "text": bool, "limits": {"depth", "min_tokens", "max_nodes"},
     "snapshot_ms", "build_ms", "root": NODE}
    NODE = {"id", "tokens", "prefix_tokens", "subtree_tokens", "subtree_nodes", "locks",
            "hits", "idle_s", ["text"], "children": [NODE...], "hidden": SUMMARY | null}
    SUMMARY = {"nodes", "tokens", "locked_tokens", "idle_s"}
"""

from __future__ import annotations

import hashlib
import heapq
import operator
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from radixgen.runtime.cache.tree_snapshot import TreeSnapshot

ROOT_ID = "root"
SNIPPET_HEAD_TOKENS = 24  # a text snippet: the edge's first tokens ...
SNIPPET_TAIL_TOKENS = 8  # ... and its last ones
MAX_DEPTH = 256
MAX_NODES = 5000


@dataclass(frozen=True)
class TreeLimits:
    """How much of the tree a document shows (validated by the route: 400 names the field)."""

    depth: int = 64  # levels below the root
    min_tokens: int = 1  # a subtree with fewer tokens is folded into its parent's summary
    max_nodes: int = 300  # shown nodes, the root not counted


def _snippet(key: list[int], decode: Callable[[list[int]], str]) -> str:
    if len(key) <= SNIPPET_HEAD_TOKENS + SNIPPET_TAIL_TOKENS:
        return decode(key)
    return decode(key[:SNIPPET_HEAD_TOKENS]) + " … " + decode(key[-SNIPPET_TAIL_TOKENS:])


def _node_id(salt: bytes, parent_id: bytes, key: list[int]) -> bytes:
    """8 hex digits naming the prefix root..node (its parent's id chained with its edge)."""
    data = parent_id + array("q", key).tobytes()
    return hashlib.blake2b(data, digest_size=4, key=salt).hexdigest().encode()


def build_tree_view(
    snapshot: TreeSnapshot,
    limits: TreeLimits,
    salt: bytes,
    decode: Callable[[list[int]], str] | None = None,
) -> dict[str, Any]:
    """The document for `snapshot` (see the module docstring). Runs off the scheduler thread,
    in time linear in the tree plus the shown nodes' children; its per-node work is C-level
    (prefix sums over the preorder), so it holds the GIL briefly and makes little garbage."""
    started = time.perf_counter()
    keys, locks, hits, used_at = snapshot.keys, snapshot.locks, snapshot.hits, snapshot.used_at
    _, ends = snapshot.structure()
    # Node i's subtree is the preorder range [i, ends[i]): its totals are prefix-sum differences.
    own = list(map(len, keys))
    own_sums = [0, *accumulate(own)]
    locked_sums = [0, *accumulate(map(operator.mul, own, map(bool, locks)))]

    def subtree_tokens(index: int) -> int:
        return own_sums[ends[index]] - own_sums[index]

    def children(index: int) -> Iterator[int]:
        child = index + 1  # the first child follows its parent; the next one its subtree
        while child < ends[index]:
            yield child
            child = ends[child]

    # Admission: heaviest subtrees first, each only below an admitted parent.
    shown = bytearray(len(keys))
    shown[0] = 1
    heap = [(-subtree_tokens(c), c, 1) for c in children(0)]
    heapq.heapify(heap)
    budget = limits.max_nodes
    while heap and budget > 0:
        neg_tokens, index, level = heapq.heappop(heap)
        if level > limits.depth or -neg_tokens < limits.min_tokens:
            continue
        shown[index] = 1
        budget -= 1
        for child in children(index):
            heapq.heappush(heap, (-subtree_tokens(child), child, level + 1))

    now = snapshot.taken_at

    def idle(at: float) -> float:
        return round(max(now - at, 0.0), 3)

    def node(index: int, node_id: bytes, prefix: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": node_id.decode(),
            "tokens": own[index],
            "prefix_tokens": prefix,
            "subtree_tokens": subtree_tokens(index),
            "subtree_nodes": ends[index] - index - (index == 0),  # the root is no cache node
            "locks": locks[index] if index else 0,
            "hits": hits[index],
            "idle_s": idle(used_at[index]) if index else None,
        }
        if decode is not None and index:
            out["text"] = _snippet(keys[index], decode)
        kids, hidden = [], [0, 0, 0, float("-inf")]
        for child in sorted(children(index), key=lambda c: -subtree_tokens(c)):
            end = ends[child]
            if shown[child]:
                child_id = _node_id(salt, node_id, keys[child])
                kids.append(node(child, child_id, prefix + own[child]))
            else:
                hidden[0] += end - child
                hidden[1] += subtree_tokens(child)
                hidden[2] += locked_sums[end] - locked_sums[child]
                hidden[3] = max(hidden[3], max(used_at[child:end]))
        out["children"] = kids
        out["hidden"] = (
            {"nodes": hidden[0], "tokens": hidden[1], "locked_tokens": hidden[2]}
            | {"idle_s": idle(hidden[3])}
            if hidden[0]
            else None
        )
        return out

    root = node(0, ROOT_ID.encode(), 0)
    return {
        "object": "cache_tree",
        "nodes": len(keys) - 1,
        "tokens": own_sums[-1],
        "evictable_tokens": snapshot.evictable_tokens,
        "protected_tokens": snapshot.protected_tokens,
        "shown_nodes": sum(shown) - 1,
        "text": decode is not None,
        "limits": {
            "depth": limits.depth,
            "min_tokens": limits.min_tokens,
            "max_nodes": limits.max_nodes,
        },
        "snapshot_ms": round(snapshot.hold_seconds * 1e3, 3),
        "build_ms": round((time.perf_counter() - started) * 1e3, 3),
        "root": root,
    }
