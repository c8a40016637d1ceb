"""CacheManager: the bridge between requests and KV memory.

It is the only place that moves slots between the three owners: the allocator (free), the radix
tree (cached, evictable or protected) and a running request (its own slots in the req table).
The tree itself never sees a request; this class translates.

Slot accounting, true at every step:

    allocator.available + tree.evictable + tree.protected + sum(own slots of running) == size

and with no request running the last term is 0: the idle invariant reported by `stats`.
"""

from __future__ import annotations

import torch

from radixgen.runtime.cache.kv_pool import SlotAllocator
from radixgen.runtime.cache.radix_cache import RadixCache
from radixgen.runtime.cache.req_table import ReqToTokenTable
from radixgen.runtime.request import Req


class CacheManager:
    def __init__(
        self, allocator: SlotAllocator, req_table: ReqToTokenTable, disable_radix_cache: bool
    ):
        self.allocator = allocator
        self.req_table = req_table
        self.tree = RadixCache(allocator)
        self.disabled = disable_radix_cache

    # --- capacity --------------------------------------------------------------------------

    @property
    def available_tokens(self) -> int:
        """Slots that can be had now: free ones plus evictable cache."""
        return self.allocator.available + self.tree.evictable_size

    def alloc_slots(self, n: int) -> torch.Tensor | None:
        """n free slots, evicting LRU cache if needed; None if even eviction cannot free them."""
        if n > self.allocator.available:
            self.tree.evict(n - self.allocator.available)
        return self.allocator.alloc(n)

    # --- request lifecycle -----------------------------------------------------------------

    def match(self, req: Req) -> tuple[torch.Tensor, object]:
        """Longest cached prefix usable by `req`: at least one token is always left to compute
        (its logits are needed), and prompt-logprob positions are recomputed."""
        if self.disabled:
            return self.tree.match_prefix(()).indices, self.tree.root
        limit = req.seq_len - 1
        if req.wants_input_logprobs and not req.input_token_logprobs:
            limit = min(limit, req.logprob.logprob_start_len)
        return self.tree.match_prefix(req.fill_ids[: max(limit, 0)])

    def begin(self, req: Req, prefix: torch.Tensor, node) -> bool:
        """Give `req` a req-table row holding its cached prefix, and lock that prefix.
        Returns False (nothing changed) when no row is free."""
        row = self.req_table.alloc()
        if row is None:
            return False
        self.tree.lock(node)
        req.req_pool_row, req.prefix_indices, req.last_node = row, prefix, node
        req.kv_len = int(prefix.shape[0])
        self.req_table.write(row, 0, prefix)
        return True

    def extend(self, req: Req, n: int) -> torch.Tensor | None:
        """Allocate slots for the next `n` tokens of `req` and record them in its row."""
        slots = self.alloc_slots(n)
        if slots is not None:
            self.req_table.write(req.req_pool_row, req.kv_len, slots)
        return slots

    def drop_uncomputed(self, req: Req, n: int) -> None:
        """Free the `n` slots `extend` gave `req` past its KV when the pass that was to fill
        them failed (its KV length never counted them, so `release` would not)."""
        self.allocator.free(self.req_table.read(req.req_pool_row, req.kv_len + n, req.kv_len))

    def cache_unfinished(self, req: Req) -> None:
        """Share a still-running request's computed KV through the tree (after each prefill or
        prefill chunk), so later requests can reuse it; the request keeps it locked."""
        if not self.disabled:
            self._share(req, req.kv_len)

    def publish(self, req: Req, computing: int) -> None:
        """Share `req`'s next `computing` tokens through the tree *before* the forward pass
        that computes their KV, so requests admitted after it into the same batch reuse them
        instead of waiting a step (a burst of few-shot questions, `n > 1` samples).

        Until that pass runs, the published slots hold no KV, so only requests in the same
        batch may match them: each layer writes the batch's new K/V before any of its attention
        reads the pool. A failed pass must therefore drop the cache (the scheduler flushes)."""
        if not self.disabled:
            self._share(req, req.kv_len + computing)

    def _share(self, req: Req, length: int) -> None:
        """Insert `req`'s first `length` tokens (slots from its row) into the tree and move its
        lock to their node: the tree keeps its own slots where it already had the tokens (the
        request's duplicates are freed) and takes ownership of the rest."""
        key = req.fill_ids[:length]
        slots = self.req_table.read(req.req_pool_row, length)
        inserted = self.tree.insert(key, slots)
        self.allocator.free(slots[req.cached_len : inserted.prefix_len])
        match = self.tree.match_prefix(key)
        self.req_table.write(req.req_pool_row, 0, match.indices)
        self.tree.lock(match.node)
        self.tree.unlock(req.last_node)
        req.prefix_indices, req.last_node = match.indices, match.node

    def release(self, req: Req) -> None:
        """Hand `req`'s KV to the tree (or free it when the cache is disabled), unlock its prefix
        and free its row. Used when a request finishes, is aborted or is retracted."""
        if req.req_pool_row is None:
            return
        slots = self.req_table.read(req.req_pool_row, req.kv_len)
        if self.disabled:
            self.allocator.free(slots)
        else:
            inserted = self.tree.insert(req.fill_ids[: req.kv_len], slots)
            self.allocator.free(slots[req.cached_len : inserted.prefix_len])
            self.tree.unlock(req.last_node)
        self.req_table.free(req.req_pool_row)
        req.req_pool_row, req.prefix_indices, req.last_node, req.kv_len = None, None, None, 0

    def flush(self) -> None:
        """Drop every cached prefix. Only valid when no request holds KV."""
        self.tree.reset()
        self.allocator.clear()

    def memory_stats(self) -> dict[str, int]:
        return {
            "kv_total": self.allocator.size,
            "kv_free": self.allocator.available,
            "kv_evictable": self.tree.evictable_size,
            "kv_protected": self.tree.protected_size,
            "evicted_tokens": self.tree.evicted_tokens,
        }
