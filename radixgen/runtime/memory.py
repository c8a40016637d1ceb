"""Give the heap memory a burst of requests freed back to the operating system.

glibc's malloc keeps what a program frees: a freed chunk goes back to its arena (one per thread
that allocates -- the event loop, the `asyncio.to_thread` workers, the tokenizer's rayon pool,
the scheduler), and an arena returns pages to the kernel only from its top. Short-lived giants
thus stay resident as free chunks: tokenizing one 8 MiB prompt allocates ~1 GB of token strings,
offsets and id lists for a few seconds, and after three of them (refused: too long) the server's
RSS went from 2.35 GB to 3.36 GB and stayed there, idle. `malloc_trim(0)` walks every arena and
returns the free pages inside it: that server went down to 2.19 GB (0.24 s, loaded machine).

`malloc_trim` leaves the top chunk of every arena but the main one. A thread arena gives its top
back only when a free leaves it above M_TRIM_THRESHOLD, which glibc raises along with the mmap
threshold up to 64 MiB, so each arena that held a huge transient kept up to 64 MiB: trimmed,
the burst of tests/server/test_resource_bounds.py still left 24-144 MB. `fix_malloc_thresholds`
pins both thresholds at 32 MiB, once at engine start: allocations keep their warmed-up pattern
(anything under 32 MiB, such as a decode step's logits, is reused from the arenas -- no more page
faults per step than before) and the residue fell to 30-49 MB.

The scheduler calls `release_free_memory` on its busy->idle edge (and when the engine asks after
a request it refused), never between steps. It costs ~0.5 ms after an ordinary request, 10-30 ms
after 256 sequences, plus re-faulting the pages the next request touches (~1 MB). Elsewhere
(musl, macOS, Windows) there is no `malloc_trim` and both functions do nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's ceiling for the dynamic mmap threshold


def _libc_function(name: str, argtypes: list) -> Callable[..., int] | None:
    try:
        function = getattr(ctypes.CDLL(None), name)  # the process's own C library
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


_malloc_trim = _libc_function("malloc_trim", [ctypes.c_size_t])
_mallopt = _libc_function("mallopt", [ctypes.c_int, ctypes.c_int])


def fix_malloc_thresholds() -> bool:
    """Pin glibc's mmap and trim thresholds at 32 MiB (see the module doc); False where libc
    has no `mallopt`. Process-wide: call it once, before the model loads."""
    if _mallopt is None or _malloc_trim is None:  # not glibc: leave that allocator alone
        return False
    return bool(
        _mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES) and _mallopt(M_TRIM_THRESHOLD, THRESHOLD_BYTES)
    )


def release_free_memory() -> bool:
    """Return free heap pages of every malloc arena to the OS; False where libc cannot. The call
    releases the GIL (ctypes), so other Python threads run meanwhile."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True
