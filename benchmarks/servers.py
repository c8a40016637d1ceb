"""Server processes for the serving benchmark: start one on a loopback port, wait until it is
ready, stop it, and read its counters."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from radixgen import launcher

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
    env: tuple[tuple[str, str], ...] = ()
    """Variables added to the server's environment (llama.cpp's LD_LIBRARY_PATH)."""


def radixgen_spec(cache: bool, mixed: bool = True) -> ServerSpec:
    """`radixgen serve` with the defaults (radix cache and mixed steps on), or without the radix
    cache (the cache-off baseline), or without mixed prefill+decode steps."""
    argv = [python_bin(), "-m", "radixgen.cli", "serve", "--host", "127.0.0.1"]
    argv += ["--log-level", "warning", "--kv-cache-tokens", "65536"]
    if not mixed:
        argv.append("--no-enable-mixed-chunk")
        label = "radixgen (mixed steps OFF)"
        return ServerSpec("radixgen_unmixed", label, tuple(argv), "/health", True)
    if cache:
        return ServerSpec("radixgen", "radixgen (radix cache ON)", tuple(argv), "/health", True)
    argv.append("--disable-radix-cache")
    return ServerSpec("radixgen_off", "radixgen (radix cache OFF)", tuple(argv), "/health", True)


@contextlib.contextmanager
def running_process(spec: ServerSpec, log_dir: Path) -> Iterator[launcher.ServerProcess]:
    """Start the server (radixgen/launcher.py) with its output in `log_dir/<key>.log`, wait
    until `spec.ready_path` answers, yield the process (`.url`, `.pid`); always stop it."""
    with launcher.running_server(
        command=spec.argv,
        health_path=spec.ready_path,
        timeout=READY_TIMEOUT_S,
        name=spec.label,
        log_path=log_dir / f"{spec.key}.log",
        cwd=ROOT,
        env={**os.environ, **dict(spec.env)} if spec.env else None,
    ) as server:
        yield server


@contextlib.contextmanager
def running_server(spec: ServerSpec, log_dir: Path) -> Iterator[str]:
    """`running_process`, yielding only the server's root URL."""
    with running_process(spec, log_dir) as server:
        yield server.url


def rss_bytes(pid: int) -> int | None:
    """Resident memory of process `pid` (Linux /proc; None where it cannot be read)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # reported in kB
    return None


def served_model(root: str) -> str:
    return httpx.get(root + "/v1/models", timeout=30.0).json()["data"][0]["id"]


def server_counters(root: str) -> dict[str, Any]:
    return httpx.get(root + "/get_server_info", timeout=60.0).json()


def flush_cache(root: str) -> None:
    r = httpx.post(root + "/flush_cache", timeout=60.0)
    if r.status_code != 200:
        log(f"warning: /flush_cache answered {r.status_code}: {r.text[:200]}")
