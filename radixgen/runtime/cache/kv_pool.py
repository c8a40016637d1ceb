"""Token-granular KV storage and its slot allocator.

`KVPool` stores K and V for every layer in one preallocated tensor each:
`k[layer, slot, kv_head, head_dim]`. A *slot* holds one token's K/V in every layer.

A model with sliding-window layers may get a *hybrid* pool instead (`swa_layers`): the global
layers keep K/V per slot as above, while the sliding-window layers store theirs in a second,
smaller tensor of *SWA slots*, `swa_k[swa_layer, swa_slot, kv_head, head_dim]`, reached through
`swa_slot_of[slot]` (0: that token's window KV is gone, or never was). A token far behind every
window that could still read it then keeps only its global layers' KV (`swa_allocator.py`).

Slot 0 is the padding slot: it is never handed out, so index tensors may be padded with 0 and
writes to it are harmless. Usable slots are 1..size.

`SlotAllocator` hands out free slots. It knows nothing of requests or the radix tree; whoever
allocates a slot owns it until it frees it or hands it to the radix cache.
"""

from __future__ import annotations

import torch


class KVPool:
    def __init__(
        self,
        size: int,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: str | torch.device = "cpu",
        swa_layers: frozenset[int] = frozenset(),
        swa_size: int = 0,
    ):
        """`swa_layers` non-empty makes the pool hybrid: those layers store K/V in `swa_size`
        SWA slots (`swa_k`, `swa_v`) and `k`, `v` hold the other layers only."""
        self.size = size
        self.swa_size = swa_size if swa_layers else 0
        full_layers = [i for i in range(num_layers) if i not in swa_layers]
        shape = (len(full_layers), size + 1, num_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        full_views = zip(self.k.unbind(0), self.v.unbind(0), strict=True)
        views = dict(zip(full_layers, full_views, strict=True))
        self.swa_slot_of: torch.Tensor | None = None  # [size + 1] int64 when hybrid
        if swa_layers:
            swa_shape = (len(swa_layers), self.swa_size + 1, num_kv_heads, head_dim)
            self.swa_k = torch.zeros(swa_shape, dtype=dtype, device=device)
            self.swa_v = torch.zeros(swa_shape, dtype=dtype, device=device)
            swa_views = zip(self.swa_k.unbind(0), self.swa_v.unbind(0), strict=True)
            views.update(zip(sorted(swa_layers), swa_views, strict=True))
            self.swa_slot_of = torch.zeros(size + 1, dtype=torch.int64, device=device)
        # Each layer's views, made once: every layer of every step asks for them.
        self._layers = [views[i] for i in range(num_layers)]
        per_layer = 2 * num_kv_heads * head_dim * self.k.element_size()
        self.full_token_bytes = per_layer * len(full_layers)  # a slot, in the global layers
        self.swa_token_bytes = per_layer * len(swa_layers)  # an SWA slot

    @property
    def hybrid(self) -> bool:
        return self.swa_slot_of is not None

    @property
    def nbytes(self) -> int:
        """The bytes the pool's K/V tensors take."""
        return (self.size + 1) * self.full_token_bytes + (self.swa_size + 1) * self.swa_token_bytes

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store K/V for `slots` ([T], SWA slots in a hybrid pool's SWA layers) in `layer`;
        k, v: [T, Hkv, D]."""
        k_buf, v_buf = self._layers[layer]
        k_buf.index_copy_(0, slots, k if k.dtype == k_buf.dtype else k.to(k_buf.dtype))
        v_buf.index_copy_(0, slots, v if v.dtype == v_buf.dtype else v.to(v_buf.dtype))

    def buffers(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of one layer, each [size + 1, Hkv, D] (views of `k` and `v`), or
        [swa_size + 1, Hkv, D] in a hybrid pool's SWA layers."""
        return self._layers[layer]


class SlotAllocator:
    """Free list of KV slots 1..size. `alloc` returns None rather than over-committing.

    Freed slots are copied into a list of returned runs and joined into the free list only when
    an allocation needs them, so a free costs its own length, not the pool's; slots are reused
    in the order they were freed.
    """

    def __init__(self, size: int):
        self.size = size
        self.clear()

    def clear(self) -> None:
        self._free = torch.arange(1, self.size + 1, dtype=torch.int64)
        self._returned: list[torch.Tensor] = []
        self._returned_count = 0

    @property
    def available(self) -> int:
        return int(self._free.shape[0]) + self._returned_count

    def alloc(self, n: int) -> torch.Tensor | None:
        if n > self.available:
            return None
        if n > self._free.shape[0]:
            self._free = torch.cat((self._free, *self._returned))
            self._returned, self._returned_count = [], 0
        slots, self._free = self._free[:n], self._free[n:]
        return slots

    def free(self, slots: torch.Tensor) -> None:
        """Return `slots` (copied: the caller may reuse its tensor)."""
        if slots.numel():
            self._returned.append(slots.to(torch.int64, copy=True))
            self._returned_count += int(slots.numel())
