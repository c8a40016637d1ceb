"""The FastAPI application: engine lifecycle, health, and shared helpers.

The engine loads in a background thread after the server starts listening, so `/health` answers
503 while loading instead of refusing connections. Routes live in `native.py` (SGLang's API) and
`openai_api.py` (`/v1`); they reach the engine only through `engine_of(request)`. API keys,
tenants and body limits are the guard's (`guard.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from radixgen.runtime.config import EngineConfig
from radixgen.runtime.engine import Engine
from radixgen.server.errors import (
    APIError,
    ClientDisconnected,
    install_error_handlers,
)
from radixgen.server.guard import BODY_READ_TIMEOUT, MAX_BODY_BYTES, GuardMiddleware, check_api_key
from radixgen.server.metrics import ServerMetrics

logger = logging.getLogger(__name__)

DONE_EVENT = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class ServerSettings:
    engine: EngineConfig
    served_model_name: str | None = None
    api_keys: tuple[str, ...] = ()  # each key is a tenant; none: no auth, one tenant
    max_body_bytes: int = MAX_BODY_BYTES
    body_read_timeout: float = BODY_READ_TIMEOUT  # seconds for a whole request body to arrive
    cors_allow_origins: tuple[str, ...] = ()  # CORS stays off unless origins are given

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


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def event_stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


async def until_disconnect(request: Request, work: Awaitable[Any]) -> Any:
    """Await `work`, cancelling it if the client goes away (the engine then aborts the
    request and frees its KV)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            await asyncio.sleep(0.1)  # never spin, whatever the server's receive returns

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    raise ClientDisconnected


def create_app(settings: ServerSettings, holder: EngineHolder | None = None) -> FastAPI:
    holder = holder or EngineHolder(settings.engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        holder.start()
        yield
        holder.draining = True
        await asyncio.to_thread(holder.shutdown)

    app = FastAPI(title="radixgen", lifespan=lifespan)
    app.state.holder = holder
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(
        GuardMiddleware,
        api_keys=settings.api_keys,
        max_body_bytes=settings.max_body_bytes,
        body_read_timeout=settings.body_read_timeout,
    )
    metrics = ServerMetrics(lambda: holder.engine.stats() if holder.engine else None)
    holder.observer = metrics.observe
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_allow_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )

    @app.get("/health")
    async def health():
        if holder.engine is None or holder.draining:
            state = "draining" if holder.draining else ("failed" if holder.error else "loading")
            return JSONResponse({"status": state}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus_metrics():
        body = await asyncio.to_thread(metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    from radixgen.server import native, openai_api

    app.include_router(native.router)
    app.include_router(openai_api.router)
    return app
