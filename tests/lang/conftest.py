"""Backends for the language tests: every program runs on each of them.

- "engine": the in-process backend over the session `engine` (tests/conftest.py);
- "runtime": `RuntimeEndpoint` over one `radixgen serve` subprocess (started on first use, once
  per session, stopped at the end);
- "openai": the `OpenAI` backend as a completion model on that server's /v1, with the ChatML
  template (SmolLM2's path matches no template rule).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import radixgen as sgl
from radixgen.lang.backend.engine_backend import EngineBackend
from radixgen.lang.global_config import global_config
from radixgen.launcher import running_server

LANG_SERVER_ARGS = [
    "--dtype",
    "float32",
    "--kv-cache-tokens",
    "16384",
    "--log-level",
    "warning",
    "--max-running-requests",
    "32",
]
BACKENDS = ["engine", "runtime", "openai"]
NATIVE_BACKENDS = ["engine", "runtime"]


@pytest.fixture(scope="session")
def lang_server_url():
    with running_server(LANG_SERVER_ARGS) as server:
        yield server.url


@pytest.fixture(scope="session")
def engine_backend(engine) -> EngineBackend:
    return EngineBackend(engine)


@pytest.fixture(scope="session")
def runtime_backend(lang_server_url):
    backend = sgl.RuntimeEndpoint(lang_server_url)
    yield backend
    backend.shutdown()


@pytest.fixture(scope="session")
def served_model(lang_server_url) -> str:
    return httpx.get(f"{lang_server_url}/v1/models").json()["data"][0]["id"]


def make_openai(url: str, model: str, chat: bool):
    return sgl.OpenAI(
        model,
        is_chat_model=chat,
        chat_template="chatml",
        base_url=f"{url}/v1",
        api_key="unused",
        max_retries=0,
    )


@pytest.fixture(scope="session")
def openai_backend(lang_server_url, served_model):
    return make_openai(lang_server_url, served_model, chat=False)


@pytest.fixture(scope="session")
def openai_chat_backend(lang_server_url, served_model):
    return make_openai(lang_server_url, served_model, chat=True)


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.getfixturevalue(f"{request.param}_backend")


@pytest.fixture(params=NATIVE_BACKENDS)
def native_backend(request):
    return request.getfixturevalue(f"{request.param}_backend")


@pytest.fixture
def restore_default_backend():
    saved = global_config.default_backend
    yield
    global_config.default_backend = saved


def server_counters(backend: Any) -> dict[str, Any]:
    """The runtime's counters (prompt_tokens, cached_tokens, ...) behind a native backend."""
    return backend.get_server_info()


def prefill(backend: Any, payload: dict[str, Any]) -> Any:
    """One raw native request through the backend's transport (for hand computations)."""
    return backend._post_generate(payload)
