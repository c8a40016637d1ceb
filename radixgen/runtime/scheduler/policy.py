"""Waiting-queue order: which requests to admit first.

- `lpm` (longest prefix match): requests whose prompt shares the most tokens with the cache go
  first, so cached prefixes are used before they are evicted.
- `dfs-weight`: walk the radix tree depth first, heavier subtrees (more waiting requests) first,
  so requests sharing a prefix run back to back.
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
    stack = [cache.tree.root]
    while stack:
        node = stack.pop()
        ordered.extend(at_node.get(id(node), ()))
        children = [c for c in node.children.values() if weight.get(id(c))]
        # Push lighter children first so the heaviest is visited next.
        stack.extend(sorted(children, key=lambda c: weight[id(c)]))
    return ordered
