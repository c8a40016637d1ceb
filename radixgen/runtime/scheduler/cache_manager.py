"""CacheManager: the bridge between requests and KV memory.

It is the only place that moves slots between the three owners: the allocator (free), the radix
tree (cached, evictable or protected) and a running request (its own slots in the req table).
The tree itself never sees a request; this class translates.

Slot accounting, true at every step:

    allocator.available + tree.evictable + tree.protected + sum(own slots of running) == size

and with no request running the last term is 0: the idle invariant reported by `stats`.

Sliding windows (a hybrid pool, `SwaSlotAllocator`, with `window` set). A slot also needs an SWA
slot while its token is inside some window; SWA slots run short before slots do. Then
`evict_swa` frees, in this order: the window KV of running requests' own tokens their window has
passed, then tree nodes' window KV (`RadixCache.evict_swa`), sparing every slot that a request
holding KV still sees: its last `window - 1` positions and the tokens it is about to compute.
`match` cuts a cached prefix back to where its window KV is whole. SWA capacity counts in
`available_tokens`: the pool's SWA slots less those the running requests' windows protect.
"""

from __future__ import annotations

import torch

from radixgen.runtime.cache.kv_pool import KVPool, SlotAllocator
from radixgen.runtime.cache.radix_cache import RadixCache
from radixgen.runtime.cache.req_table import ReqToTokenTable
from radixgen.runtime.cache.swa_allocator import SwaSlotAllocator
from radixgen.runtime.request import Req

SWA_EVICT_MIN = 64  # SWA slots freed at least per eviction: each one scans the tree


class CacheManager:
    def __init__(
        self,
        allocator: SlotAllocator | SwaSlotAllocator,
        req_table: ReqToTokenTable,
        disable_radix_cache: bool,
        window: int | None = None,
    ):
        """`window`: the sliding window of a hybrid pool's SWA layers (with a SwaSlotAllocator)."""
        self.allocator = allocator
        self.req_table = req_table
        self.tree = RadixCache(allocator)
        self.disabled = disable_radix_cache
        self.swa = allocator if isinstance(allocator, SwaSlotAllocator) else None
        if (self.swa is None) != (window is None):
            raise ValueError("a hybrid pool's allocator and its window go together")
        self.window = window
        self._holding: dict[int, Req] = {}  # requests with a req-table row, by id
        self._allocated_end: dict[int, int] = {}  # by id: end of what `extend` gave it last

    @classmethod
    def for_pool(
        cls,
        pool: KVPool,
        req_table: ReqToTokenTable,
        disable_radix_cache: bool,
        sliding_window: int | None,
    ) -> CacheManager:
        """The manager of `pool`'s slots: a hybrid pool's come with SWA slots for windows of
        `sliding_window` (the model's), a plain pool's alone."""
        if not pool.hybrid:
            return cls(SlotAllocator(pool.size), req_table, disable_radix_cache)
        allocator = SwaSlotAllocator(pool.size, pool.swa_size, pool.swa_slot_of)
        return cls(allocator, req_table, disable_radix_cache, sliding_window)

    # --- capacity --------------------------------------------------------------------------

    @property
    def available_tokens(self) -> int:
        """Slots that can be had now: free ones plus evictable cache (and, with a hybrid pool,
        no more than the SWA slots the running requests' windows leave)."""
        if self.swa is None:
            return self.allocator.available + self.tree.evictable_size
        slots = self.swa.full.available + self.tree.evictable_size
        swa_slots = self.swa.swa.available
        if swa_slots < slots:  # short of free SWA slots: count what eviction can free
            live = self.swa.live(self._window_slots().nonzero().flatten())
            swa_slots = self.swa.swa.size - int(live.sum())
        return min(slots, swa_slots)

    def alloc_slots(self, n: int) -> torch.Tensor | None:
        """n free slots, evicting LRU cache if needed; None if even eviction cannot free them."""
        if self.swa is None:
            if n > self.allocator.available:
                self.tree.evict(n - self.allocator.available)
            return self.allocator.alloc(n)
        if n > self.swa.full.available:
            self.tree.evict(n - self.swa.full.available)
        if n > self.swa.swa.available:
            self.evict_swa(max(n - self.swa.swa.available, SWA_EVICT_MIN))
        return self.allocator.alloc(n)

    def evict_swa(self, n: int) -> int:
        """Free at least `n` SWA slots no window can see (fewer if there are not as many):
        running requests' own tokens first, then the tree's LRU nodes. Returns the count."""
        freed = 0
        for req in self._holding.values():
            passed = req.kv_len - (self.window - 1)  # positions before it are out of sight
            if passed > req.cached_len:
                own = self.req_table.read(req.req_pool_row, passed, req.cached_len)
                freed += self.swa.free_swa(own)
        if freed < n and not self.disabled:
            freed += self.tree.evict_swa(n - freed, self._window_slots(), self.window)
        return freed

    def _window_slots(self) -> torch.Tensor:
        """[size + 1] bool: the slots some request holding KV may still read through a window
        (its last `window - 1` computed positions) or is about to compute (what `extend` gave
        it past its KV; a decode step allocates and computes with no eviction between)."""
        marked = torch.zeros(self.swa.size + 1, dtype=torch.bool)
        for req in self._holding.values():
            start = max(req.kv_len - (self.window - 1), 0)
            end = max(req.kv_len, self._allocated_end.get(id(req), 0))
            marked[self.req_table.read(req.req_pool_row, end, start)] = True
        marked[0] = False
        return marked

    # --- request lifecycle -----------------------------------------------------------------

    def match(self, req: Req) -> tuple[torch.Tensor, object]:
        """Longest cached prefix usable by `req`: at least one token is always left to compute
        (its logits are needed), and prompt-logprob positions are recomputed."""
        if self.disabled:
            return self.tree.match_prefix(()).indices, self.tree.root
        limit = req.seq_len - 1
        if req.wants_input_logprobs and not req.input_token_logprobs:
            limit = min(limit, req.logprob.logprob_start_len)
        key = req.fill_ids[: max(limit, 0)]
        match = self.tree.match_prefix(key)
        if self.window is not None:  # only as far as its window KV is whole
            usable = self.tree.window_usable_len(match.indices, self.window)
            if usable < match.indices.shape[0]:
                match = self.tree.match_prefix(key[:usable])
        return match

    def begin(self, req: Req, prefix: torch.Tensor, node) -> bool:
        """Give `req` a req-table row holding its cached prefix, and lock that prefix.
        Returns False (nothing changed) when no row is free."""
        row = self.req_table.alloc()
        if row is None:
            return False
        self.tree.lock(node)
        self._holding[id(req)] = req
        req.req_pool_row, req.prefix_indices, req.last_node = row, prefix, node
        req.kv_len = int(prefix.shape[0])
        self.req_table.write(row, 0, prefix)
        return True

    def extend(self, req: Req, n: int) -> torch.Tensor | None:
        """Allocate slots for the next `n` tokens of `req` and record them in its row."""
        slots = self.alloc_slots(n)
        if slots is not None:
            self.req_table.write(req.req_pool_row, req.kv_len, slots)
            self._allocated_end[id(req)] = req.kv_len + n
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
            if self.window is not None and len(req.origin_input_ids) <= req.kv_len:
                self.tree.anchor(req.origin_input_ids)  # SWA eviction keeps a window before it
            self.tree.unlock(req.last_node)
        self.req_table.free(req.req_pool_row)
        del self._holding[id(req)]
        self._allocated_end.pop(id(req), None)
        req.req_pool_row, req.prefix_indices, req.last_node, req.kv_len = None, None, None, 0

    def flush(self) -> None:
        """Drop every cached prefix. Only valid when no request holds KV."""
        self.tree.reset()
        self.allocator.clear()

    def memory_stats(self) -> dict[str, int]:
        if self.swa is None:
            stats = {"kv_total": self.allocator.size, "kv_free": self.allocator.available}
        else:
            stats = {
                "kv_total": self.swa.full.size,
                "kv_free": self.swa.full.available,
                "swa_total": self.swa.swa.size,
                "swa_free": self.swa.swa.available,
                # tokens of the tree with live window KV
                "swa_cached": int(self.swa.live(self.tree.all_slots()).sum()),
            }
        return stats | {
            "kv_evictable": self.tree.evictable_size,
            "kv_protected": self.tree.protected_size,
            "evicted_tokens": self.tree.evicted_tokens,
        }
