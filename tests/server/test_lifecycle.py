"""Process lifecycle: SIGTERM drains in-flight work, refuses new work, and exits cleanly."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx

from radixgen.launcher import running_server

SERVER_ARGS = ["--kv-cache-tokens", "4096", "--drain-timeout", "60", "--log-level", "warning"]


def test_sigterm_lets_in_flight_streams_finish_then_exits():
    with running_server(SERVER_ARGS) as server:
        url, proc = server.url, server.proc
        frames: list[str] = []
        first_chunk = threading.Event()

        def stream() -> None:
            body = {
                "text": "Tell me a story.",
                "stream": True,
                "sampling_params": {"max_new_tokens": 60, "ignore_eos": True},
            }
            with httpx.stream("POST", f"{url}/generate", json=body, timeout=120) as resp:
                for line in resp.iter_lines():
                    if line:
                        frames.append(line)
                        first_chunk.set()

        client = threading.Thread(target=stream)
        client.start()
        assert first_chunk.wait(60)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        try:  # a new connection is refused (or answered 503) while draining
            refused = httpx.get(f"{url}/v1/models", timeout=5).status_code == 503
        except httpx.TransportError:
            refused = True
        assert refused
        client.join(timeout=120)
        assert frames[-1] == "data: [DONE]"
        final = json.loads(frames[-2][len("data: ") :])
        assert final["meta_info"]["finish_reason"] == {"type": "length", "length": 60}
        proc.wait(timeout=70)
        assert proc.returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
