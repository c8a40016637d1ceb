"""A live `radixgen serve` process on the default model, shared by the server tests.

It runs float32 with a modest KV pool on a free loopback port; the fixture waits for /health and
terminates the process (and waits for it) at the end of the session.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
]


def _wait_healthy(url: str, proc: subprocess.Popen, log) -> None:
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited: {log.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not become healthy")


@contextlib.contextmanager
def running_server(args: list[str]):
    """A `radixgen serve` subprocess on a free loopback port; yields its base URL once
    /health answers 200, and terminates (and reaps) it on exit."""
    port = _free_port()
    # Output goes to a file, not a pipe: an unread pipe would block the server once full.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "radixgen.cli", "serve", "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, proc, log)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def server_url():
    with running_server(SERVER_ARGS) as url:
        yield url


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
