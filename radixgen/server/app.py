"""The FastAPI application: engine lifecycle, health, metrics, and the API routers.

The engine loads in a background thread after the server starts listening, so `/health` answers
503 while loading instead of refusing connections. Routes live in `native_api.py` (SGLang's API)
and `openai_api.py` (`/v1`); they reach the engine only through `context.engine_of(request)`.
API keys, tenants and body limits are the guard's (`guard.py`). `/dashboard` and `/cache_tree`
(the radix cache, live) are the dashboard package's.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from radixgen.server import native_api, openai_api
from radixgen.server.context import EngineHolder, ServerSettings
from radixgen.server.dashboard.recent import fan_out
from radixgen.server.dashboard.routes import DashboardState
from radixgen.server.dashboard.routes import router as dashboard_router
from radixgen.server.errors import install_error_handlers
from radixgen.server.guard import GuardMiddleware
from radixgen.server.metrics import ServerMetrics


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
    app.state.dashboard = DashboardState(show_text=settings.dashboard_show_text)
    holder.observer = fan_out(metrics.observe, app.state.dashboard.recent.observe)
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

    app.include_router(native_api.router)
    app.include_router(openai_api.router)
    app.include_router(dashboard_router)
    return app
