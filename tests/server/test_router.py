"""`radixgen serve --dp 2` behind SGLang's router (sglang-router): registration, routing, a worker
killed under load, and a stop that leaves no process behind.

One deployment (two workers, one thread each, and the router) serves the whole module; the tests
run in file order, the fault test kills one of its workers and the last test stops it.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from radixgen.launcher import free_port
from tests.server.conftest import wait_idle

pytest.importorskip("sglang_router", reason="needs the router extra: pip install -e '.[router]'")
psutil = pytest.importorskip("psutil")

SERVED_NAME = "radixgen-routed"
STARTUP_SECONDS = 300  # two model loads on a busy machine
REQUEST_TIMEOUT = 60
READY = re.compile(r"^\[radixgen\] ready: (\S+) \(SGLang router", re.M)
WORKER = re.compile(r"^\[radixgen\] worker \d/2: (\S+) \(pid (\d+),", re.M)


class Deployment:
    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc = proc
        self.log = log  # appended to by every process of the deployment
        self.url = ""
        self.workers: dict[str, int] = {}  # url -> pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.time() + STARTUP_SECONDS
        while not READY.search(self.output()):
            if self.proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"serve --dp 2 did not become ready:\n{self.output()[-3000:]}")
            time.sleep(0.5)
        self.url = READY.search(self.output()).group(1)
        self.workers = {url: int(pid) for url, pid in WORKER.findall(self.output())}

    def stop(self, timeout: float = 90) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                child.kill()
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    argv = [sys.executable, "-m", "radixgen.cli", "serve", "--dp", "2"]
    argv += ["--port", str(free_port()), "--num-threads", "1", "--served-model-name", SERVED_NAME]
    argv += ["--kv-cache-tokens", "4096", "--max-running-requests", "8", "--drain-timeout", "5"]
    argv += ["--log-level", "warning"]
    log = tmp_path_factory.mktemp("router") / "serve.log"
    with open(log, "ab") as out:  # O_APPEND: reading it never moves the writers' offset
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        dep = Deployment(proc, log)
        try:
            dep.wait_ready()
            yield dep
        finally:
            dep.stop()


def _router_warnings(output: str) -> list[str]:
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    return [line for line in plain.splitlines() if re.search(r"\b(WARN|ERROR)\b.*smg::", line)]


def test_router_registers_both_workers_under_the_served_name(deployment):
    models = httpx.get(f"{deployment.url}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [SERVED_NAME]
    workers = httpx.get(f"{deployment.url}/workers", timeout=10).json()["workers"]
    assert {w["url"] for w in workers} == set(deployment.workers)
    assert all(w["is_healthy"] and w["model_id"] == SERVED_NAME for w in workers)
    # registration loaded the tokenizer offline: the router logged no warning
    assert _router_warnings(deployment.output()) == []
    for url in deployment.workers:  # the launcher passed the serve options through
        info = httpx.get(f"{url}/get_server_info", timeout=30).json()
        assert (info["served_model_name"], info["num_threads"]) == (SERVED_NAME, 1)
        assert info["kv_cache_tokens"] == 4096


def test_router_routes_chat_and_generate_with_streams(deployment):
    import openai

    client = openai.OpenAI(base_url=f"{deployment.url}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Name a color."}]
    chat = client.chat.completions.create(model=SERVED_NAME, messages=messages, max_tokens=6)
    assert chat.model == SERVED_NAME and chat.choices[0].message.content
    chunks = client.chat.completions.create(
        model=SERVED_NAME, messages=messages, max_tokens=6, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed

    params = {"max_new_tokens": 6, "temperature": 0}
    reply = httpx.post(
        f"{deployment.url}/generate", json={"text": "Hello", "sampling_params": params}, timeout=60
    )
    assert reply.status_code == 200 and reply.json()["meta_info"]["completion_tokens"] == 6
    body = {"text": "Hello", "sampling_params": params, "stream": True}
    with httpx.stream("POST", f"{deployment.url}/generate", json=body, timeout=60) as stream:
        assert stream.status_code == 200
        events = [line[6:] for line in stream.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["text"] == reply.json()["text"]  # greedy: the same text

    loads = httpx.get(f"{deployment.url}/get_loads", timeout=10).json()["workers"]
    assert {entry["worker"] for entry in loads} == set(deployment.workers)


FAULT_REQUESTS = 16
FAULT_CONCURRENCY = 4
TOPICS = ("Rivers", "Quantum dots", "Jazz", "Volcanoes", "Tax law", "Bees", "Chess", "Ice")


def _send(url: str, i: int) -> str:
    """One request through the router: 'ok', 'error' (4xx/5xx with a body), or 'cut' (200
    headers, then the connection closed before the body ended: its worker died mid-reply)."""
    kind = ("chat", "generate", "stream")[i % 3]
    prompt = f"{TOPICS[i % len(TOPICS)]}, part {i}:"  # unlike prefixes: both workers get some
    if kind == "chat":
        path = "/v1/chat/completions"
        body = {"model": SERVED_NAME, "messages": [{"role": "user", "content": prompt}]}
        body |= {"max_tokens": 24}
    else:
        path = "/generate"
        params = {"max_new_tokens": 24, "ignore_eos": True}
        body = {"text": prompt, "sampling_params": params, "stream": kind == "stream"}
    with httpx.stream("POST", url + path, json=body, timeout=REQUEST_TIMEOUT) as reply:
        try:
            raw = reply.read()
        except httpx.RemoteProtocolError:
            assert reply.status_code == 200, reply.status_code
            return "cut"
    if reply.status_code >= 400:
        assert raw.strip(), f"{reply.status_code} without a body"
        return "error"
    assert reply.status_code == 200, reply.status_code
    if kind == "stream":
        events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]", events[-2:]
        return "error" if "error" in json.loads(events[-2]) else "ok"
    out = json.loads(raw)
    assert out["choices"][0]["message"]["content"] if kind == "chat" else out["text"]
    return "ok"


def _worker_running_a_request(workers: dict[str, int], timeout: float) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for url in workers:
            if httpx.get(f"{url}/get_server_info", timeout=30).json()["running_requests"]:
                return url
        time.sleep(0.05)
    pytest.fail("no worker ran a request")


def test_a_worker_killed_under_load_fails_only_its_requests_cleanly(deployment):
    with concurrent.futures.ThreadPoolExecutor(FAULT_CONCURRENCY) as pool:
        futures = [pool.submit(_send, deployment.url, i) for i in range(FAULT_REQUESTS)]
        victim = _worker_running_a_request(deployment.workers, timeout=60)
        os.kill(deployment.workers[victim], signal.SIGKILL)
        (survivor,) = set(deployment.workers) - {victim}
        # nothing hangs: every request ends within its timeout
        done, pending = concurrent.futures.wait(futures, timeout=2 * REQUEST_TIMEOUT)
        assert not pending
    outcomes = [f.result() for f in futures]  # re-raises a request that ended any other way
    counts = {k: outcomes.count(k) for k in ("ok", "error", "cut")}
    print(
        f"\nrouter fault test: {counts['ok']} succeeded, {counts['error']} failed with an error "
        f"status, {counts['cut']} cut mid-reply, of {FAULT_REQUESTS}"
    )
    assert counts["ok"] >= 1
    assert counts["cut"] <= FAULT_CONCURRENCY  # only replies in flight on the killed worker

    stats = wait_idle(survivor, timeout=60)
    assert stats["kv_idle_invariant_ok"] is True
    deadline = time.time() + 10  # the launcher reports the death and keeps serving
    while f"exited with status {-signal.SIGKILL}" not in deployment.output():
        assert time.time() < deadline, deployment.output()[-2000:]
        time.sleep(0.2)
    assert deployment.proc.poll() is None

    # the router stops choosing the dead worker (3 failed health checks), then all succeed
    deadline = time.time() + 90
    while time.time() < deadline:
        workers = httpx.get(f"{deployment.url}/workers", timeout=10).json()["workers"]
        if not any(w["url"] == victim and w["is_healthy"] for w in workers):
            break
        time.sleep(1)
    else:
        pytest.fail("the router kept the killed worker healthy")
    assert [_send(deployment.url, i) for i in range(3)] == ["ok"] * 3


def test_sigterm_stops_the_router_and_every_worker(deployment):
    launcher = psutil.Process(deployment.proc.pid)
    children = launcher.children(recursive=True)
    routers = [p for p in launcher.children() if p.pid not in deployment.workers.values()]
    assert len(routers) == 1
    workdir = routers[0].cwd()  # the router's temporary directory (its tokenizer link)
    assert len(children) >= 2  # the router and the surviving worker (the other was killed)

    assert deployment.stop() == 0
    # gone when the launcher exits: it waited for each (their SIGTERM-on-parent-death would
    # stop them too, but only after it)
    assert [p.pid for p in children if psutil.pid_exists(p.pid)] == []
    assert not os.path.exists(workdir)
    output = deployment.output()
    assert len(READY.findall(output)) == 1
    assert "stopping: the router, then 2 workers" in output
