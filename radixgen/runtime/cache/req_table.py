"""The request-to-token table: for each running request, the KV slot of every position.

`table[row, pos]` is the KV slot of token `pos` of the request holding `row`. Entries past a
request's current length are stale but always valid slot numbers (initialised to the padding
slot 0), so attention may gather them and mask them out.
"""

from __future__ import annotations

import torch


class ReqToTokenTable:
    def __init__(self, max_requests: int, max_context_len: int, device: str | torch.device = "cpu"):
        self.max_requests = max_requests
        self.max_context_len = max_context_len
        self.table = torch.zeros((max_requests, max_context_len), dtype=torch.int64, device=device)
        self._free_rows = list(range(max_requests))

    @property
    def available(self) -> int:
        return len(self._free_rows)

    def alloc(self) -> int | None:
        return self._free_rows.pop() if self._free_rows else None

    def free(self, row: int) -> None:
        self._free_rows.append(row)

    def write(self, row: int, start: int, slots: torch.Tensor) -> None:
        """Set positions [start, start + len(slots)) of `row`."""
        self.table[row, start : start + slots.shape[0]] = slots

    def read(self, row: int, end: int, start: int = 0) -> torch.Tensor:
        """Slots of positions [start, end) of `row`."""
        return self.table[row, start:end]
