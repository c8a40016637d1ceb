"""radixgen/launcher.py on small stand-in servers (no model): ready, log tail on early exit,
deadline, SIGKILL after the grace period, reaping, and the log file's lifetime."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from radixgen.launcher import ServerStartError, free_port, launch, running_server, url_of

# A server that takes `--port P` as its last two arguments, like `radixgen serve` and llama.cpp's.
PORT_SERVER = """
import http.server, sys
print("listening", flush=True)
handler = http.server.SimpleHTTPRequestHandler
http.server.HTTPServer(("127.0.0.1", int(sys.argv[-1])), handler).serve_forever()
"""
# A server that ignores SIGTERM and never answers (stop must kill it).
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def _reaped(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_running_server_appends_the_port_waits_and_stops_reaped():
    with running_server(command=[sys.executable, "-c", PORT_SERVER], health_path="/") as server:
        pid, log = server.pid, server.log_path
        assert server.alive and log is not None and log.exists()
        assert server.url.startswith("http://127.0.0.1:")
    assert not server.alive and _reaped(pid)
    assert not log.exists()  # a temporary log goes with the server


def test_an_early_exit_raises_with_the_log_tail_and_a_named_log_is_kept(tmp_path):
    log = tmp_path / "server.log"
    argv = [sys.executable, "-c", "print('model file missing', flush=True); raise SystemExit(3)"]
    server = launch(argv, url_of("127.0.0.1", free_port()), name="stand-in", log_path=log)
    with pytest.raises(ServerStartError) as raised:
        server.wait_ready(timeout=60, poll=0.05)
    first_line = str(raised.value).splitlines()[0]
    assert first_line == "stand-in exited with status 3 while starting; log: model file missing"
    server.stop()
    assert log.read_text() == "model file missing\n"


def test_the_deadline_raises_and_stop_kills_a_server_that_ignores_sigterm():
    server = launch([sys.executable, "-c", STUBBORN], url_of("127.0.0.1", free_port()))
    with pytest.raises(ServerStartError, match="was not ready at /health after 1 s"):
        server.wait_ready(timeout=1, poll=0.1)
    assert server.alive
    server.stop(grace=1)
    assert server.proc.returncode == -signal.SIGKILL and _reaped(server.pid)
    server.stop(grace=1)  # idempotent


def test_a_command_that_cannot_start_leaves_no_temporary_log(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with pytest.raises(FileNotFoundError):
        launch([str(tmp_path / "no-such-server")], "http://127.0.0.1:1")
    assert list(tmp_path.iterdir()) == []
