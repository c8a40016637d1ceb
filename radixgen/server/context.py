"""What routes read from the app: its settings, the engine (once loaded), the caller's tenant.

The app keeps a `ServerSettings` and an `EngineHolder` in `app.state`; routes reach the engine
only through `engine_of(request)`, which answers 503 while the model loads, after it failed to
load, and while the server drains.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from radixgen.runtime.config import EngineConfig
from radixgen.runtime.engine import Engine
from radixgen.server.errors import APIError
from radixgen.server.guard import BODY_READ_TIMEOUT, MAX_BODY_BYTES, check_api_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    engine: EngineConfig
    served_model_name: str | None = None
    api_keys: tuple[str, ...] = ()  # each key is a tenant; none: no auth, one tenant
    max_body_bytes: int = MAX_BODY_BYTES
    body_read_timeout: float = BODY_READ_TIMEOUT  # seconds for a whole request body to arrive
    cors_allow_origins: tuple[str, ...] = ()  # CORS stays off unless origins are given
    dashboard_show_text: bool = False  # /cache_tree and /dashboard show prompt text snippets

    def __post_init__(self) -> None:
        """Raise ValueError for a key that no bearer header can carry, or a limit not > 0."""
        if isinstance(self.api_keys, str):
            raise TypeError("api_keys is a tuple of keys, not one string")
        for key in self.api_keys:
            check_api_key(key)
        if self.max_body_bytes <= 0 or not self.body_read_timeout > 0:
            raise ValueError("max_body_bytes and body_read_timeout must be positive")


class EngineHolder:
    """Loads the engine off the event loop; `engine` is None until it is ready."""

    def __init__(
        self,
        config: EngineConfig,
        on_ready: Callable[[], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ):
        self.config = config
        self.on_ready = on_ready
        self.on_failure = on_failure
        self.observer: Callable[[dict[str, Any]], None] | None = None
        self.engine: Engine | None = None
        self.error: BaseException | None = None
        self.draining = False
        self._thread = threading.Thread(target=self._load, name="radixgen-loader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _load(self) -> None:
        try:
            self.engine = Engine(self.config, observer=self.observer)
            logger.info("engine ready")
            if self.on_ready is not None:
                self.on_ready()
        except BaseException as exc:  # reported by /health and every route
            logger.exception("engine failed to load")
            self.error = exc
            if self.on_failure is not None:
                self.on_failure(exc)

    def shutdown(self) -> None:
        self._thread.join(timeout=600)
        if self.engine is not None:
            self.engine.shutdown()


def engine_of(request: Request) -> Engine:
    holder: EngineHolder = request.app.state.holder
    if holder.draining:
        raise APIError(503, "the server is shutting down", headers={"Retry-After": "5"})
    if holder.engine is None:
        message = "the model failed to load" if holder.error else "the model is still loading"
        raise APIError(503, message, headers={"Retry-After": "5"})
    return holder.engine


def tenant_of(request: Request) -> str | None:
    """Who sent the request, as far as aborts are concerned: the API key it authenticated with
    (a digest; set by the guard middleware), or None on a server without keys."""
    return getattr(request.state, "tenant", None)


def served_model_name(request: Request) -> str:
    settings: ServerSettings = request.app.state.settings
    return settings.served_model_name or engine_of(request).source.name
