"""A live `radixgen serve` process on the default model, shared by the server tests.

It runs float32 with a modest KV pool on a free loopback port (radixgen/launcher.py): the fixture
waits for /health and terminates the process (and reaps it) at the end of the session.
"""

from __future__ import annotations

import time

import httpx
import pytest

from radixgen.launcher import running_server

BODY_READ_TIMEOUT = 2

SERVER_ARGS = [
    "--dtype",
    "float32",
    "--kv-cache-tokens",
    "16384",
    "--log-level",
    "warning",
    "--max-running-requests",
    "16",
    "--max-queued-requests",
    "40",
    "--body-read-timeout",  # short, so test_transport's stalled bodies get 408 quickly
    str(BODY_READ_TIMEOUT),
]


@pytest.fixture(scope="session")
def server_url():
    with running_server(SERVER_ARGS) as server:
        yield server.url


@pytest.fixture(scope="session")
def client(server_url):
    import openai

    return openai.OpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="session")
def model_id(client):
    return client.models.list().data[0].id


def server_stats(url: str) -> dict:
    return httpx.get(f"{url}/get_server_info", timeout=30).json()


def wait_idle(url: str, timeout: float = 15.0) -> dict:
    deadline = time.time() + timeout
    while True:
        stats = server_stats(url)
        if stats["running_requests"] == 0 and stats["waiting_requests"] == 0:
            return stats
        if time.time() > deadline:
            raise AssertionError(f"server not idle: {stats}")
        time.sleep(0.1)
