"""Which backend a program runs on: the one given, else the calling program's, else the default.

A program called from inside another inherits the caller's backend (`calling_backend`, set by
the runner around each program function). A `Runtime` means its endpoint; a `radixgen.Engine`
is wrapped in its one in-process backend.
"""

from __future__ import annotations

import contextvars
from typing import Any

from radixgen.lang.global_config import global_config

# The backend of the program whose function is running: nested program calls inherit it.
calling_backend: contextvars.ContextVar[Any] = contextvars.ContextVar("sgl_backend", default=None)


def resolve_backend(backend: Any = None) -> Any:
    """The backend to use: `backend`, else the calling program's (for a program called from
    inside another), else the default one. A `Runtime` means its endpoint; a
    `radixgen.Engine` is wrapped in its in-process backend."""
    if backend is None:
        backend = calling_backend.get()
    backend = backend if backend is not None else global_config.default_backend
    if backend is None:
        raise ValueError("no backend: pass backend=... or call set_default_backend(...)")
    endpoint = getattr(backend, "endpoint", None)
    if endpoint is not None:
        return endpoint
    from radixgen.runtime.engine import Engine  # torch: only once an engine may be involved

    if isinstance(backend, Engine):
        from radixgen.lang.backend.engine_backend import engine_backend

        return engine_backend(backend)
    return backend
