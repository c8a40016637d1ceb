"""Scale out on one machine: `radixgen serve --dp N` runs N workers behind SGLang's router.

The launcher starts N `radixgen serve` processes (the workers) on free loopback ports, then SGLang's
router (the `sglang-router` package, installed by the `[router]` extra) with the cache-aware
policy on the requested host and port, and supervises them. Contract:

- Threads: each worker gets `--num-threads max(1, cores // N)` unless the caller gave one.
- Ready: one line `[radixgen] ready: URL ...` on stdout, only once every worker's /health is 200
  and the router lists every worker as healthy. Before that, nothing is reachable on the port.
- Model name: the router names each worker's model after the worker's /server_info
  (`served_model_name`), so its /v1/models and /workers show the served name. It also loads a
  tokenizer per model from the worker's `tokenizer_path`, resolved first as a local path in its
  working directory: the launcher runs it in a temporary directory where that name links to the
  model's tokenizer files, so the router loads them offline, without a warning.
- Stop (SIGTERM or SIGINT, also while starting): the router first, so it can finish forwarding
  in-flight requests while the workers still run, then every worker; each process is waited for
  and killed if it outlives the drain timeout. The children run in their own process group, so a
  terminal's Ctrl-C reaches only the launcher, which then stops them in that order; on Linux they
  also get SIGTERM if the launcher itself dies.
- Failures: if a worker exits while starting, everything started is stopped (exit status 1). A
  worker that dies later is reported and the router keeps routing to the others; the launcher
  exits (stopping the rest) when the router exits or no worker is left.

Every process is started, awaited and stopped through radixgen/launcher.py; their output goes to
the launcher's own stdout and stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import signal
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import TextIO

import httpx

from radixgen.launcher import (
    ServerProcess,
    ServerStartError,
    connect_host,
    free_port,
    launch,
    serve_argv,
    stop_all,
    url_of,
)

ROUTER_POLICY = "cache_aware"  # the default; benchmarks compare others (e.g. round_robin)
POLL_SECONDS = 0.25
KILL_MARGIN_SECONDS = 10.0  # beyond the drain timeout, before a process is killed
ROUTER_HEALTH_CHECK_SECONDS = 5  # the router marks a worker unhealthy after 3 failed checks


class StartupError(RuntimeError):
    """A process exited or did not become ready while the deployment was starting."""


class Interrupted(Exception):
    """A stop was requested (SIGTERM/SIGINT) before the deployment was ready."""


@dataclasses.dataclass(frozen=True)
class ScaleOutConfig:
    """What to start. `worker_args` are the `radixgen serve` options every worker gets, without
    --host, --port and --num-threads (the launcher sets those)."""

    dp: int
    host: str
    port: int
    model: str  # the engine's --model, for the router's tokenizer
    worker_args: tuple[str, ...] = ()
    num_threads: int | None = None
    api_key: str | None = None
    drain_timeout: float = 30.0
    startup_timeout: float = 900.0
    router_log_level: str = "warn"
    policy: str = ROUTER_POLICY  # the router's --policy

    def threads_per_worker(self, cores: int | None = None) -> int:
        if self.num_threads is not None:
            return self.num_threads
        return max(1, (cores or available_cores()) // self.dp)


def available_cores() -> int:
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def router_available() -> bool:
    return importlib.util.find_spec("sglang_router") is not None


class ScaleOut:
    """The processes of one deployment. `start()` returns once it is ready (or raises, having
    stopped what it started); `stop()` stops everything, router first; both are idempotent."""

    def __init__(self, config: ScaleOutConfig, out: TextIO = sys.stdout) -> None:
        self.config = config
        self.out = out
        self.workers: list[ServerProcess] = []
        self.router: ServerProcess | None = None
        self.url = url_of(config.host, config.port)
        self._stop_requested = False
        self._workdir: tempfile.TemporaryDirectory | None = None
        self._reported_dead: set[int] = set()

    # -- lifecycle --------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Safe from a signal handler: the start-up waits and `wait()` notice it."""
        self._stop_requested = True

    def start(self) -> None:
        try:
            self._start_workers()
            self._wait_workers_healthy()
            self._start_router(self._served_model_name())
            self._wait_router_ready()
        except BaseException:
            self.stop()
            raise
        names = ", ".join(w.url for w in self.workers)
        self._say(f"ready: {self.url} (SGLang router, {self.config.policy}, workers: {names})")

    def wait(self) -> int:
        """Block until a stop is requested (0), the router exits or no worker is left (1)."""
        while not self._stop_requested:
            if self.router is not None and not self.router.alive:
                self._say(f"the router exited with status {self.router.proc.returncode}")
                return 1
            for child in self.workers:
                if not child.alive and child.proc.pid not in self._reported_dead:
                    self._reported_dead.add(child.proc.pid)
                    self._say(
                        f"{child.name} ({child.url}) exited with status "
                        f"{child.proc.returncode}; the router routes to the others"
                    )
            if not any(w.alive for w in self.workers):
                self._say("no worker is left")
                return 1
            time.sleep(POLL_SECONDS)
        return 0

    def stop(self) -> None:
        grace = self.config.drain_timeout + KILL_MARGIN_SECONDS
        children = ([self.router] if self.router else []) + self.workers
        if any(c.alive for c in children):
            self._say(f"stopping: the router, then {len(self.workers)} workers")
        if self.router is not None:
            stop_all([self.router], grace)
        stop_all(self.workers, grace)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    # -- steps ------------------------------------------------------------------------------
    def _spawn(self, argv: list[str], url: str, name: str, cwd: str | None = None) -> ServerProcess:
        """Own session: Ctrl-C reaches the launcher only, which stops them in order."""
        return launch(argv, url, name=name, inherit_output=True, cwd=cwd, die_with_parent=True)

    def _start_workers(self) -> None:
        threads = self.config.threads_per_worker()
        for i in range(self.config.dp):
            port = free_port()
            args = ["--host", "127.0.0.1", "--num-threads", str(threads)]
            name = f"worker {i + 1}/{self.config.dp}"
            url = url_of("127.0.0.1", port)
            child = self._spawn(serve_argv(port, [*args, *self.config.worker_args]), url, name)
            self.workers.append(child)
            self._say(f"{child.name}: {child.url} (pid {child.pid}, {threads} threads)")

    def _wait_workers_healthy(self) -> None:
        """One after the other: they load at the same time, so this takes the slowest's time."""
        deadline = time.monotonic() + self.config.startup_timeout
        for child in self.workers:
            try:
                child.wait_ready(
                    "/health",
                    timeout=max(0.0, deadline - time.monotonic()),
                    request_timeout=2,
                    poll=POLL_SECONDS,
                    check=self._check_starting_workers,
                )
            except ServerStartError as exc:
                raise StartupError(str(exc)) from exc

    def _check_starting_workers(self) -> None:
        """While waiting for one worker: a stop request, or any worker's exit, ends the start."""
        self._check_interrupt()
        for child in self.workers:
            if not child.alive:
                raise StartupError(
                    f"{child.name} exited with status {child.proc.returncode} while loading"
                )

    def _served_model_name(self) -> str:
        reply = httpx.get(f"{self.workers[0].url}/model_info", headers=self._auth(), timeout=30)
        reply.raise_for_status()
        return reply.json()["served_model_name"]

    def _start_router(self, served_name: str) -> None:
        self._workdir = tempfile.TemporaryDirectory(prefix="radixgen-router-")
        link_tokenizer(self.config.model, served_name, Path(self._workdir.name))
        argv = router_argv(self.config, [w.url for w in self.workers])
        reachable = url_of(connect_host(self.config.host), self.config.port)
        self.router = self._spawn(argv, reachable, "the router", cwd=self._workdir.name)
        self._say(f"router: {self.url} (pid {self.router.pid}, policy {self.config.policy})")

    def _wait_router_ready(self) -> None:
        """Ready once the router lists every worker as healthy."""
        assert self.router is not None
        expected = {w.url for w in self.workers}

        def all_workers_healthy(reply: httpx.Response) -> bool:
            listed = reply.json().get("workers", [])
            return {w["url"] for w in listed if w.get("is_healthy")} >= expected

        try:
            self.router.wait_ready(
                "/workers",
                timeout=120,
                headers=self._auth(),
                request_timeout=2,
                is_ready=all_workers_healthy,
                poll=POLL_SECONDS,
                check=self._check_interrupt,
            )
        except ServerStartError as exc:
            raise StartupError(str(exc)) from exc

    # -- helpers ----------------------------------------------------------------------------
    def _check_interrupt(self) -> None:
        if self._stop_requested:
            raise Interrupted

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}

    def _say(self, message: str) -> None:
        print(f"[radixgen] {message}", file=self.out, flush=True)


def router_argv(config: ScaleOutConfig, worker_urls: list[str]) -> list[str]:
    """The router's command line. Its Prometheus exporter gets a free loopback port (the
    router's default, 29000 on every interface, would collide between deployments)."""
    argv = [sys.executable, "-m", "sglang_router.launch_router"]
    argv += ["--host", config.host, "--port", str(config.port), "--worker-urls", *worker_urls]
    argv += ["--policy", config.policy, "--log-level", config.router_log_level]
    argv += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
    argv += ["--shutdown-grace-period-secs", str(int(config.drain_timeout))]
    argv += ["--health-check-interval-secs", str(ROUTER_HEALTH_CHECK_SECONDS)]
    if config.api_key:  # clients must present it to the router, which presents it to workers
        argv += ["--api-key", config.api_key]
    return argv


def link_tokenizer(model: str, served_name: str, workdir: Path) -> bool:
    """Make `served_name`, as a path relative to the router's working directory, lead to the
    model's tokenizer files. The router loads a worker's tokenizer from its `tokenizer_path`
    (the served name): a local path first, else a Hugging Face download. False (the router
    will warn and run without a tokenizer) if the name cannot be a relative path or the model
    has no `tokenizer.json`."""
    from radixgen.runtime.model.loader import resolve_model
    from radixgen.runtime.tokenizer import tokenizer_dir

    relative = PurePosixPath(served_name)
    if not served_name or relative.is_absolute() or ".." in relative.parts:
        return False
    source_dir = tokenizer_dir(resolve_model(model))
    if source_dir is None:
        return False
    link = workdir / relative
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(source_dir.resolve(), target_is_directory=True)
    return True


def run(config: ScaleOutConfig, out: TextIO = sys.stdout) -> int:
    """Start the deployment, serve until SIGTERM/SIGINT, stop it. The exit status: 0 after a
    requested stop, 1 if it failed to start or lost its router or every worker."""
    if not router_available():
        print(
            "radixgen serve --dp: needs SGLang's router: pip install 'radixgen[router]'",
            file=sys.stderr,
        )
        return 2
    deployment = ScaleOut(config, out)
    previous = {
        sig: signal.signal(sig, lambda *_: deployment.request_stop())
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        deployment.start()
        status = deployment.wait()
    except Interrupted:
        status = 0
    except StartupError as exc:
        print(f"[radixgen] {exc}; stopped what was started", file=sys.stderr, flush=True)
        status = 1
    finally:
        deployment.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
