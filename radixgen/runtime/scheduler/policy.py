"""Waiting-queue order: which requests to admit first.

- `lpm` (longest prefix match): requests whose prompt shares the most tokens with the cache go
  first, so cached prefixes are used before they are evicted.
- `dfs-weight`: walk the radix tree depth first, heavier subtrees (more waiting requests) first,
  so requests sharing a prefix run back to back. A node's own requests come after its subtree's
  (post-order, as SGLang's `get_dfs_priority`): a request that reuses a deeper cached prefix is
  admitted before one that matched only an ancestor of it (or nothing: the root's requests
  come last), so a prefix is used while it is still cached, before new prompts evict it.
- `fcfs`: arrival order.

Cache-aware orders need a prefix match per waiting request; with a very long queue (or no cache)
they fall back to FCFS, as SGLang does.
"""

from __future__ import annotations

from collections import defaultdict

from radixgen.runtime.request import Req
from radixgen.runtime.scheduler.cache_manager import CacheManager

MAX_QUEUE_FOR_CACHE_AWARE = 128


def order_waiting(waiting: list[Req], policy: str, cache: CacheManager) -> list[Req]:
    """Return `waiting` in admission order (a new list; `waiting` is not modified)."""
    if policy == "fcfs" or cache.disabled or len(waiting) > MAX_QUEUE_FOR_CACHE_AWARE:
        return list(waiting)
    matches = {id(req): cache.match(req) for req in waiting}
    if policy == "lpm":
        # sorted() is stable: equal matches keep arrival order.
        return sorted(waiting, key=lambda r: -int(matches[id(r)][0].shape[0]))
    return _dfs_weight_order(waiting, {id(r): matches[id(r)][1] for r in waiting}, cache)


def _dfs_weight_order(waiting: list[Req], nodes: dict[int, object], cache: CacheManager):
    at_node: dict[int, list[Req]] = defaultdict(list)
    weight: dict[int, int] = defaultdict(int)
    for req in waiting:
        node = nodes[id(req)]
        at_node[id(node)].append(req)
        while node is not None:
            weight[id(node)] += 1
            node = node.parent
    ordered: list[Req] = []
    stack: list[tuple[object, bool]] = [(cache.tree.root, False)]
    while stack:  # iterative post-order: a deep tree must not hit the recursion limit
        node, children_done = stack.pop()
        if children_done:
            ordered.extend(at_node.get(id(node), ()))
            continue
        stack.append((node, True))
        children = [c for c in node.children.values() if weight.get(id(c))]
        heaviest_first = sorted(children, key=lambda c: -weight[id(c)])  # ties: tree order
        stack.extend((c, False) for c in reversed(heaviest_first))  # popped heaviest first
    return ordered
