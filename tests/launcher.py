"""Launch `radixgen serve` subprocesses for tests (shared by tests/server and tests/lang)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log) -> None:
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
    with running_server_process(args) as (url, _proc):
        yield url


@contextlib.contextmanager
def running_server_process(args: list[str]):
    """`running_server` that yields `(url, proc)`, for tests that watch the process itself."""
    port = free_port()
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
            wait_healthy(url, proc, log)
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
