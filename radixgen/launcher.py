"""Start a server process, wait until it answers over HTTP, stop it.

The one launcher of radixgen: the tests' servers, the benchmarks' servers (radixgen's and
llama.cpp's), `lang.Runtime`, and the workers and router of `radixgen serve --dp` all start and
stop through it. It imports nothing from radixgen, so any layer may use it.

Contract:
- Command: `running_server(args)` runs `python -m radixgen.cli serve --port P args...`; any other
  server is a `command` that takes `--port P` (llama.cpp's does) or a full argv for `launch`.
- Port: `free_port` asks the kernel for an unused port; `first_free_port` scans upwards from a
  given one (SGLang's `Runtime`). Another process may take the port before the server binds it.
- Output: the process's stdout and stderr go to one log file, never to a pipe nobody reads (a
  full pipe blocks the server). A log file the caller names is kept; without one a temporary file
  is used and removed on stop. `inherit_output=True` leaves them on the caller's (a supervisor
  whose children write to its terminal).
- Ready: `wait_ready` polls one path (`/health`, `/health_generate`, llama.cpp's `/v1/models`, or
  any other) until it answers 200 and `is_ready`, if given, accepts the response. It raises
  `ServerStartError` with the log's tail as soon as the process exits, radixgen's /health
  reports a failed model load, or the deadline passes.
- Stop: SIGTERM, SIGKILL after `grace` seconds, and the process is always reaped. Idempotent;
  leaving `running_server` or a `ServerProcess` context stops it, whatever happened inside.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

STOP_GRACE_SECONDS = 60.0  # SIGTERM lets a server drain; radixgen's default drain is 30 s
READY_TIMEOUT_SECONDS = 300.0
POLL_SECONDS = 0.5
TAIL_LINES = 15


class ServerStartError(RuntimeError):
    """The process exited, reported a failed start, or was not ready by the deadline. The
    message's first line says which (with the log's last line); the rest is the log's tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel reports unused on `host` right now."""
    with socket.socket(_family(host)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def first_free_port(host: str, start: int) -> int:
    """The first port from `start` upwards that `host` can bind."""
    port = start
    while not _can_bind(host, port):
        port += 1
    return port


def _can_bind(host: str, port: int) -> bool:
    with socket.socket(_family(host)) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def connect_host(host: str) -> str:
    """Where this machine reaches a server bound to `host` (a wildcard means loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve_argv(port: int, args: Sequence[str] = (), python: str | None = None) -> list[str]:
    """`python -m radixgen.cli serve --port PORT ARGS...` (this interpreter by default)."""
    return [python or sys.executable, "-m", "radixgen.cli", "serve", "--port", str(port), *args]


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM it when the thread that started it ends."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerProcess:
    """One started server: its `proc`, the `url` it answers on, and its log. Made by `launch`."""

    def __init__(
        self, proc: subprocess.Popen, url: str, name: str, log_path: Path | None, temporary: bool
    ) -> None:
        self.proc = proc
        self.url = url
        self.name = name
        self.log_path = log_path  # None when the output went to the caller's stdout/stderr
        self._temporary_log = temporary

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(
        self,
        path: str = "/health",
        *,
        timeout: float = READY_TIMEOUT_SECONDS,
        headers: Mapping[str, str] | None = None,
        request_timeout: float = 5.0,
        is_ready: Callable[[httpx.Response], bool] | None = None,
        poll: float = POLL_SECONDS,
        check: Callable[[], None] | None = None,
    ) -> None:
        """Return once GET `path` answers 200 (and `is_ready` accepts the response; a body it
        cannot read counts as not yet). `check`, called before every probe, may raise to abandon
        the wait (a supervisor's stop request)."""
        deadline = time.monotonic() + timeout
        while True:
            if check is not None:
                check()
            if not self.alive:
                self._fail(f"exited with status {self.proc.returncode} while starting")
            response = None
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(self.url + path, headers=headers, timeout=request_timeout)
            if response is not None:
                if response.status_code == 200 and _accepts(is_ready, response):
                    return
                if response.status_code == 503 and _reports_failed_load(response):
                    self._fail("failed to load its model")
            if time.monotonic() > deadline:
                self._fail(f"was not ready at {path} after {timeout:.0f} s")
            time.sleep(poll)

    def _fail(self, what: str) -> None:
        if self.log_path is None:  # its output went to the caller's terminal
            raise ServerStartError(f"{self.name} {what}")
        tail = self.log_tail()
        last = tail.splitlines()[-1][:200] if tail.strip() else "(empty log)"
        where = f"the last lines of {self.log_path}"
        raise ServerStartError(f"{self.name} {what}; log: {last}\n--- {where} ---\n{tail}")

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """The log's last `lines` lines ("" without a log file)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 64 * 1024))
            text = log.read().decode(errors="replace")
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM, SIGKILL after `grace` seconds, reap; remove a temporary log. Idempotent."""
        stop_all([self], grace)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _accepts(is_ready: Callable[[httpx.Response], bool] | None, response: httpx.Response) -> bool:
    """`is_ready`'s verdict; a body it cannot read (not JSON, a missing key) is not ready yet."""
    try:
        return is_ready is None or is_ready(response)
    except (ValueError, KeyError):
        return False


def _reports_failed_load(response: httpx.Response) -> bool:
    """radixgen's /health answers 503 {"status": "failed"} once the model failed to load."""
    try:
        return response.json().get("status") == "failed"
    except (ValueError, AttributeError):
        return False


def launch(
    argv: Sequence[str],
    url: str,
    *,
    name: str | None = None,
    log_path: str | Path | None = None,
    inherit_output: bool = False,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    new_session: bool = True,
    die_with_parent: bool = False,
) -> ServerProcess:
    """Start `argv` (which must make the server answer on `url`); do not wait for it.

    `new_session` puts it in its own session, so a terminal's Ctrl-C reaches only the caller,
    which stops it. `die_with_parent` (Linux) SIGTERMs it when the calling thread ends: only for
    a long-lived supervisor's main thread."""
    temporary = False
    if inherit_output:
        path = None
    elif log_path is None:
        fd, name_ = tempfile.mkstemp(prefix="radixgen-server-", suffix=".log")
        os.close(fd)
        path, temporary = Path(name_), True
    else:
        path = Path(log_path)
    preexec = _die_with_parent if die_with_parent and sys.platform == "linux" else None
    try:
        with contextlib.ExitStack() as stack:  # the child keeps its own copy of the log's fd
            out = None if path is None else stack.enter_context(open(path, "wb"))
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=None if env is None else dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=None if out is None else subprocess.STDOUT,
                start_new_session=new_session,
                preexec_fn=preexec,
            )
    except BaseException:  # e.g. no such program: nothing started, no log left behind
        if temporary and path is not None:
            path.unlink(missing_ok=True)
        raise
    return ServerProcess(proc, url, name or f"the server at {url}", path, temporary)


def stop_all(servers: Sequence[ServerProcess], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM every live server at once, wait for all up to `grace` seconds together, SIGKILL
    the rest; every process is reaped and temporary logs are removed."""
    for server in servers:
        if server.alive:
            with contextlib.suppress(ProcessLookupError):
                server.proc.terminate()
    deadline = time.monotonic() + grace
    for server in servers:
        try:
            server.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
        if server._temporary_log and server.log_path is not None:
            with contextlib.suppress(OSError):
                server.log_path.unlink()
            server.log_path = None


@contextlib.contextmanager
def running_server(
    args: Sequence[str] = (),
    *,
    command: Sequence[str] | None = None,
    port: int | None = None,
    health_path: str = "/health",
    timeout: float = READY_TIMEOUT_SECONDS,
    grace: float = STOP_GRACE_SECONDS,
    headers: Mapping[str, str] | None = None,
    **launch_options,
) -> Iterator[ServerProcess]:
    """A server on a free loopback port (or `port`), yielded once `health_path` answers 200 and
    stopped (reaped) on exit: `radixgen serve ARGS`, or `COMMAND ARGS --port P` for another
    server. `launch_options` go to `launch`."""
    port = port or free_port()
    argv = serve_argv(port, args) if command is None else [*command, *args, "--port", str(port)]
    server = launch(argv, url_of("127.0.0.1", port), **launch_options)
    try:
        server.wait_ready(health_path, timeout=timeout, headers=headers)
        yield server
    finally:
        server.stop(grace)
