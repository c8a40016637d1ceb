"""Assertions shared by engine and server tests."""

from __future__ import annotations

from radixgen import Engine


def assert_idle_invariant(eng: Engine) -> dict:
    """Wait for the engine to be idle and check free + evictable + protected == total."""
    stats = eng.stats()
    assert stats["running_requests"] == 0 and stats["waiting_requests"] == 0, stats
    assert stats["kv_protected"] == 0, stats
    assert stats["kv_free"] + stats["kv_evictable"] + stats["kv_protected"] == stats["kv_total"]
    assert stats["kv_idle_invariant_ok"]
    return stats
