"""SwaSlotAllocator: the slots of a hybrid KV pool (global layers per slot, sliding-window layers
per SWA slot, `kv_pool.py`).

Every slot it hands out comes with an SWA slot (`slot_map[slot]`), so a new token has K/V in every
layer. Later the token's SWA slot may be freed on its own (`free_swa`): the token keeps its global
layers' KV and becomes a *tombstone* for the sliding-window layers (`slot_map[slot] == 0`). Only a
token no query can still see through a window may be tombstoned; the cache manager decides which.

Invariants:

    slot_map[s] != 0  exactly for the allocated slots s whose window KV is live
    full.available + allocated slots == size
    swa.available + live SWA slots == swa_size

It exposes `SlotAllocator`'s interface (`available`, `alloc`, `free`, `clear`, `size`), so the
radix tree and the cache manager treat it like the plain allocator; `available` is the smaller of
the two free counts.
"""

from __future__ import annotations

import torch

from radixgen.runtime.cache.kv_pool import SlotAllocator


class SwaSlotAllocator:
    def __init__(self, size: int, swa_size: int, slot_map: torch.Tensor):
        """`slot_map`: the pool's [size + 1] int64 `swa_slot_of`, updated in place."""
        self.full = SlotAllocator(size)
        self.swa = SlotAllocator(swa_size)
        self.slot_map = slot_map
        self.slot_map.zero_()

    @property
    def size(self) -> int:
        return self.full.size

    @property
    def available(self) -> int:
        return min(self.full.available, self.swa.available)

    def clear(self) -> None:
        self.full.clear()
        self.swa.clear()
        self.slot_map.zero_()

    def alloc(self, n: int) -> torch.Tensor | None:
        """n slots, each with a live SWA slot; None (nothing taken) unless both pools have n."""
        if n > self.full.available or n > self.swa.available:
            return None
        slots = self.full.alloc(n)
        self.slot_map[slots] = self.swa.alloc(n)
        return slots

    def free(self, slots: torch.Tensor) -> None:
        """Free `slots` and the SWA slots of those that still have one."""
        if slots.numel():
            self.free_swa(slots)
            self.full.free(slots)

    def free_swa(self, slots: torch.Tensor) -> int:
        """Tombstone `slots`: free their SWA slots, keep the slots. Returns how many SWA slots
        were freed (tokens already tombstoned count 0)."""
        swa_slots = self.slot_map[slots]
        live = swa_slots != 0
        count = int(live.sum())
        if count:
            self.swa.free(swa_slots[live])
            self.slot_map[slots[live]] = 0
        return count

    def live(self, slots: torch.Tensor) -> torch.Tensor:
        """[len(slots)] bool: which of `slots` have live window KV."""
        return self.slot_map[slots] != 0

    def adopt_swa(self, dest: torch.Tensor, source: torch.Tensor) -> int:
        """Where a token of `dest` is a tombstone and the same position of `source` ([same len])
        is live, move the source's SWA slot to it (the source is about to be freed as a
        duplicate: its window KV was just computed for the same tokens). Returns the count."""
        moved = (self.slot_map[dest] == 0) & (self.slot_map[source] != 0)
        count = int(moved.sum())
        if count:
            self.slot_map[dest[moved]] = self.slot_map[source[moved]]
            self.slot_map[source[moved]] = 0
        return count
