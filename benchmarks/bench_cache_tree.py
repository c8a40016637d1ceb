"""What `/cache_tree` costs on a 10,000-node radix tree.

    python -m benchmarks.bench_cache_tree [--nodes 10000] [--repeat 50]

Builds a `RadixCache` of about `--nodes` nodes the way a chat workload grows one (a few hundred
shared prefixes, questions branching off them at random depths), then times the three parts of
the endpoint:

- snapshot: `take_snapshot`, the only part that runs on the scheduler thread (it stalls the
  scheduler for this long, between two steps);
- view: `build_tree_view` on the route's worker thread (default limits: 300 nodes, and the
  largest: 5,000 nodes);
- json: encoding the document, as FastAPI does.

It prints one line per part: min, median, 90th percentile and max over `--repeat` runs, in ms
(on a loaded machine the min is the cost itself; the rest adds the time other processes took).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable

from radixgen.runtime.cache.kv_pool import SlotAllocator
from radixgen.runtime.cache.radix_cache import RadixCache
from radixgen.runtime.cache.tree_snapshot import take_snapshot
from radixgen.server.dashboard.tree_view import MAX_NODES, TreeLimits, build_tree_view


def build_tree(nodes: int, seed: int = 0) -> RadixCache:
    """A tree of at least `nodes` nodes: prompts = a shared prefix cut at a random point plus a
    random question, as many as it takes."""
    rng = random.Random(seed)
    prefixes = [[rng.randrange(49152) for _ in range(rng.randrange(20, 400))] for _ in range(300)]
    tree = RadixCache(SlotAllocator(1 << 23))
    while _count_nodes(tree) < nodes:  # an insert adds at most two nodes (a leaf, a split)
        for _ in range(max((nodes - _count_nodes(tree)) // 2, 1)):
            prefix = rng.choice(prefixes)
            key = prefix[: rng.randrange(1, len(prefix))]
            key += [rng.randrange(49152) for _ in range(rng.randrange(5, 80))]
            tree.insert(key, tree.allocator.alloc(len(key)))
    return tree


def _count_nodes(tree: RadixCache) -> int:
    return sum(1 for _ in tree._iter_nodes())


def _time(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1e3)
    return sorted(times)


def _line(name: str, times: list[float]) -> str:
    p90 = times[min(int(len(times) * 0.9), len(times) - 1)]
    return (
        f"{name:<30} min {times[0]:7.2f}   median {statistics.median(times):7.2f}   "
        f"p90 {p90:7.2f}   max {times[-1]:7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()

    tree = build_tree(args.nodes)
    print(f"tree: {_count_nodes(tree)} nodes, {tree.total_size} tokens")
    snapshot = take_snapshot(tree)
    salt = b"benchmark salt.."
    default, largest = TreeLimits(), TreeLimits(max_nodes=MAX_NODES)
    doc = build_tree_view(snapshot, default, salt)
    big_doc = build_tree_view(snapshot, largest, salt)
    print(_line("snapshot (scheduler thread)", _time(lambda: take_snapshot(tree), args.repeat)))
    for name, limits in (("view, 300 nodes shown", default), ("view, 5000 nodes shown", largest)):
        print(_line(name, _time(lambda lim=limits: build_tree_view(snapshot, lim, salt), 20)))
    for name, d in (("json, 300 nodes", doc), ("json, 5000 nodes", big_doc)):
        print(_line(name, _time(lambda d=d: json.dumps(d), 20)) + f"   {len(json.dumps(d))} B")


if __name__ == "__main__":
    main()
