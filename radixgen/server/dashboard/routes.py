"""The dashboard's routes: the page (a static shell), its state, and `/cache_tree`.

- `GET /dashboard` (+ its script and style sheet) is a static shell from the package: no server
  data, nothing fetched from elsewhere (its Content-Security-Policy allows this origin only). It
  is the one thing the guard serves without a key (guard.py's open paths): a browser cannot put
  a bearer token on a page load. The page asks for the key once, keeps it in memory, and sends
  it with every data request.
- `GET /dashboard/state` and `GET /cache_tree` carry the data and sit behind `--api-key` like
  every other route. Neither ever carries prompt text unless the server was started with
  `--dashboard-show-text` (then `/cache_tree` carries snippets of each shown edge).

Tree snapshots are shared: at most one per `SNAPSHOT_INTERVAL` seconds, whoever asks, so open
dashboards cost the scheduler one copy of the tree a second or less however many there are.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from radixgen.runtime.cache.tree_snapshot import TreeSnapshot
from radixgen.runtime.engine import Engine
from radixgen.server.context import ServerSettings, engine_of, served_model_name
from radixgen.server.dashboard.recent import RecentRequests
from radixgen.server.dashboard.tree_view import MAX_DEPTH, MAX_NODES, TreeLimits, build_tree_view
from radixgen.server.errors import APIError

router = APIRouter()

SNAPSHOT_INTERVAL = 0.5  # seconds a tree snapshot is reused for
SHELL_FILES = {  # path -> (package file, media type); guard.py lists these paths as open
    "/dashboard": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
_SHELL_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_SETTINGS_SHOWN = (
    "schedule_policy",
    "kv_cache_tokens",
    "max_running_requests",
    "max_prefill_tokens",
    "chunked_prefill_size",
    "enable_mixed_chunk",
    "disable_radix_cache",
    "dtype",
    "speculative_algorithm",
    "max_queued_requests",
)
_STATS_SHOWN = (
    "running_requests",
    "waiting_requests",
    "kv_total",
    "kv_free",
    "kv_evictable",
    "kv_protected",
    "evicted_tokens",
    "prompt_tokens",
    "cached_tokens",
    "generated_tokens",
    "prefill_tokens",
    "finished_requests",
    "aborted_requests",
    "retractions",
    "cache_hit_rate",
)


class DashboardState:
    """What the routes share: recent requests, the latest snapshot, the hash salt."""

    def __init__(self, show_text: bool):
        self.show_text = show_text
        self.recent = RecentRequests()
        self.salt = secrets.token_bytes(16)  # node ids are not comparable across restarts
        self._snapshot: TreeSnapshot | None = None
        self._lock = threading.Lock()

    def snapshot(self, engine: Engine) -> TreeSnapshot:
        """A snapshot at most `SNAPSHOT_INTERVAL` old (blocks: call off the event loop)."""
        with self._lock:
            last = self._snapshot
            if last is None or time.monotonic() - last.taken_at > SNAPSHOT_INTERVAL:
                self._snapshot = last = engine.cache_snapshot()
            return last


def _state(request: Request) -> DashboardState:
    return request.app.state.dashboard


def _shell(path: str) -> Response:
    name, media_type = SHELL_FILES[path]
    body = resources.files(__package__).joinpath("static", name).read_bytes()
    return Response(body, media_type=media_type, headers=_SHELL_HEADERS)


@router.get("/dashboard", include_in_schema=False)
async def dashboard_page():
    return _shell("/dashboard")


@router.get("/dashboard/dashboard.js", include_in_schema=False)
async def dashboard_script():
    return _shell("/dashboard/dashboard.js")


@router.get("/dashboard/dashboard.css", include_in_schema=False)
async def dashboard_style():
    return _shell("/dashboard/dashboard.css")


@router.get("/dashboard/state")
async def dashboard_state(request: Request) -> dict[str, Any]:
    """Counters, KV memory, queues, settings and the last finished requests (no text)."""
    engine = engine_of(request)
    stats = await asyncio.to_thread(engine.stats)
    settings: ServerSettings = request.app.state.settings
    return {
        "object": "dashboard_state",
        "time": time.time(),
        "model": served_model_name(request),
        "text": _state(request).show_text,
        "api_key_required": bool(settings.api_keys),
        "settings": {name: getattr(engine.config, name) for name in _SETTINGS_SHOWN},
        "stats": {name: stats[name] for name in _STATS_SHOWN},
        "recent_requests": _state(request).recent.items(),
    }


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise APIError(400, f"{name}: must be an integer", name) from None
    if not low <= value <= high:
        raise APIError(400, f"{name}: must be between {low} and {high}", name)
    return value


@router.get("/cache_tree")
async def cache_tree(request: Request) -> dict[str, Any]:
    """The radix tree, bounded (`tree_view.py`; docs/dashboard.md): `depth` levels at most,
    subtrees under `min_tokens` tokens and nodes past `max_nodes` folded into summaries."""
    default = TreeLimits()
    limits = TreeLimits(
        depth=_int_param(request, "depth", default.depth, 0, MAX_DEPTH),
        min_tokens=_int_param(request, "min_tokens", default.min_tokens, 0, 1 << 40),
        max_nodes=_int_param(request, "max_nodes", default.max_nodes, 0, MAX_NODES),
    )
    engine = engine_of(request)
    state = _state(request)
    decode = (lambda ids: engine.tokenizer.decode(ids)) if state.show_text else None

    def build() -> dict[str, Any]:
        return build_tree_view(state.snapshot(engine), limits, state.salt, decode)

    return await asyncio.to_thread(build)
