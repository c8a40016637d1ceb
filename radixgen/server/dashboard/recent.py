"""The last finished requests, as the dashboard lists them: token counts and latencies only.

Fed by the engine's finished-request observer (on the scheduler thread); read by routes on other
threads. `deque.append` and `list(deque)` are atomic, so no lock is needed.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

RECENT_REQUESTS = 40
_FIELDS = ("outcome", "prompt_tokens", "cached_tokens", "completion_tokens", "ttft", "e2e_latency")

Observer = Callable[[dict[str, Any]], None]


class RecentRequests:
    def __init__(self, size: int = RECENT_REQUESTS):
        self._items: deque[dict[str, Any]] = deque(maxlen=size)
        self._sequence = itertools.count(1)

    def observe(self, record: dict[str, Any]) -> None:
        """The engine's observer: one finished request (`loop.finished_record`)."""
        item = {name: record.get(name) for name in _FIELDS}
        item["seq"] = next(self._sequence)  # numbers requests for the page, nothing more
        item["finished_at"] = time.time()
        self._items.append(item)

    def items(self) -> list[dict[str, Any]]:
        """Oldest first."""
        return list(self._items)


def fan_out(*observers: Observer) -> Observer:
    """One observer that calls each of `observers` in turn."""

    def observe(record: dict[str, Any]) -> None:
        for observer in observers:
            observer(record)

    return observe
