"""Server processes for the serving benchmark: start one on a loopback port, wait until it is
ready, stop it, and read its counters."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 900.0


def log(msg: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def python_bin() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


# --- servers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    key: str
    label: str
    argv: tuple[str, ...]  # without --port
    ready_path: str
    native_api: bool = False  # radixgen: /flush_cache and /get_server_info


def radixgen_spec(cache: bool) -> ServerSpec:
    argv = [python_bin(), "-m", "radixgen.cli", "serve", "--host", "127.0.0.1"]
    argv += ["--log-level", "warning", "--kv-cache-tokens", "65536"]
    if cache:
        return ServerSpec("radixgen", "radixgen (radix cache ON)", tuple(argv), "/health", True)
    argv.append("--disable-radix-cache")
    return ServerSpec("radixgen_off", "radixgen (radix cache OFF)", tuple(argv), "/health", True)


def llamacpp_spec(model_path: Path) -> ServerSpec:
    argv = [python_bin(), "-m", "llama_cpp.server", "--model", str(model_path)]
    argv += ["--host", "127.0.0.1", "--n_threads", "2", "--n_ctx", "4096"]
    argv += ["--interrupt_requests", "false"]
    return ServerSpec("llamacpp", "llama.cpp (llama-cpp-python server)", tuple(argv), "/v1/models")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 15) -> str:
    """The log's last line (for the table), then its last `lines` lines (for stderr)."""
    text = path.read_text(errors="replace").strip().splitlines() or ["(empty log)"]
    return text[-1][:200] + "\n" + "\n".join(text[-lines:])


def wait_ready(proc: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {_tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError, ValueError):
            resp = httpx.get(url, timeout=5.0)
            if resp.status_code == 200:
                return
            if resp.status_code == 503 and resp.json().get("status") == "failed":
                raise RuntimeError(f"model failed to load: {_tail(log_path)}")
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {READY_TIMEOUT_S:.0f}s: {_tail(log_path)}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_server(spec: ServerSpec, log_dir: Path) -> Iterator[str]:
    """Start the server, wait until it is ready, yield its root URL; always stop it."""
    port = free_port()
    log_path = log_dir / f"{spec.key}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [*spec.argv, "--port", str(port)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches only us; the finally below stops it
        )
        try:
            root = f"http://127.0.0.1:{port}"
            wait_ready(proc, root + spec.ready_path, log_path)
            yield root
        finally:
            stop_server(proc)


def served_model(root: str) -> str:
    return httpx.get(root + "/v1/models", timeout=30.0).json()["data"][0]["id"]


def server_counters(root: str) -> dict[str, Any]:
    return httpx.get(root + "/get_server_info", timeout=60.0).json()


def flush_cache(root: str) -> None:
    r = httpx.post(root + "/flush_cache", timeout=60.0)
    if r.status_code != 200:
        log(f"warning: /flush_cache answered {r.status_code}: {r.text[:200]}")
