"""`Runtime`: launch `radixgen serve` in a subprocess and talk to it through `RuntimeEndpoint`.

    runtime = radixgen.Runtime(model="smollm2", dtype="float32")
    radixgen.set_default_backend(runtime)
    ...
    runtime.shutdown()

Keyword arguments are `radixgen serve` options (EngineConfig fields plus host, port, api_key,
served_model_name, drain_timeout, max_body_bytes, body_read_timeout); SGLang's `model_path`
means `model`. Options radixgen does not have (e.g. SGLang's `tp_size`) are ignored with a
warning. The port is the first free one from `port` (default 30000) upwards. The server's output
goes to `runtime.log_path`. Starting, waiting and stopping are radixgen/launcher.py's.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import tempfile
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx

from radixgen.lang.backend.runtime_endpoint import RuntimeEndpoint
from radixgen.launcher import ServerProcess, first_free_port, launch, serve_argv, url_of
from radixgen.runtime.config import EngineConfig

_SERVER_OPTIONS = {
    "host",
    "api_key",
    "served_model_name",
    "drain_timeout",
    "cors_allow_origins",
    "max_body_bytes",
    "body_read_timeout",
}


def _serve_flags(options: dict[str, Any]) -> list[str]:
    known = {f.name for f in dataclasses.fields(EngineConfig)} | _SERVER_OPTIONS
    flags: list[str] = []
    for name, value in options.items():
        if name not in known:
            warnings.warn(f"Runtime: radixgen has no option {name!r}; ignored", stacklevel=3)
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags += [flag] if value else []
        elif isinstance(value, (list, tuple)):
            flags += [flag, *map(str, value)]
        elif value is not None:
            flags += [flag, str(value)]
    return flags


class Runtime:
    def __init__(self, log_level: str = "error", launch_timeout: float = 300.0, **kwargs: Any):
        """Start the server and wait until `/health_generate` answers 200 (a one-token
        generation), polling every half second; raise `ServerStartError` (a RuntimeError) with
        the server's log tail if it exits or `launch_timeout` passes."""
        if "model_path" in kwargs:
            kwargs.setdefault("model", kwargs.pop("model_path"))
        host = kwargs.pop("host", "127.0.0.1")
        port = first_free_port(host, int(kwargs.pop("port", 30000)))
        self.api_key = kwargs.get("api_key")
        self.url = url_of(host, port)
        self.generate_url = self.url + "/generate"
        self.endpoint: RuntimeEndpoint | None = None
        args = ["--host", host, "--log-level", log_level, *_serve_flags(kwargs)]
        log_fd, self.log_path = tempfile.mkstemp(prefix="radixgen-runtime-", suffix=".log")
        os.close(log_fd)  # kept after shutdown, for the user to read
        self.process: ServerProcess | None = launch(
            serve_argv(port, args), self.url, name="the Runtime's server", log_path=self.log_path
        )
        self.pid = self.process.pid
        atexit.register(self.shutdown)
        try:
            self.process.wait_ready(
                "/health_generate",
                timeout=launch_timeout,
                headers=self._headers(),
                request_timeout=30,
            )
        except BaseException:
            self.shutdown()
            raise
        self.endpoint = RuntimeEndpoint(self.url, api_key=self.api_key)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def shutdown(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 30 s) and reap it. Idempotent."""
        if self.endpoint is not None:
            self.endpoint.shutdown()
        process, self.process = self.process, None
        if process is None:
            return
        process.stop(grace=30)
        atexit.unregister(self.shutdown)

    # --- conveniences of SGLang's Runtime ---------------------------------------------------------

    def cache_prefix(self, prefix: str) -> None:
        self.endpoint.cache_prefix(prefix)

    def get_tokenizer(self) -> Any:
        from radixgen.runtime.model.loader import resolve_model
        from radixgen.runtime.tokenizer import load_tokenizer

        return load_tokenizer(resolve_model(self.endpoint.get_model_name()))

    def generate(
        self,
        prompt: str | list[str],
        sampling_params: dict[str, Any] | None = None,
        return_logprob: bool = False,
        logprob_start_len: int | None = None,
        top_logprobs_num: int | None = None,
    ) -> str:
        """One native `/generate` call; returns the response as a JSON string (as SGLang)."""
        payload: dict[str, Any] = {
            "text": prompt,
            "sampling_params": sampling_params or {},
            "return_logprob": return_logprob,
            "logprob_start_len": logprob_start_len,
            "top_logprobs_num": top_logprobs_num,
        }
        return json.dumps(self.endpoint._post_generate(payload))

    async def async_generate(
        self, prompt: str, sampling_params: dict[str, Any] | None = None
    ) -> AsyncIterator[str]:
        """Stream `/generate`, yielding new text as it arrives."""
        payload = {"text": prompt, "sampling_params": sampling_params or {}, "stream": True}
        headers = self._headers()
        sent = 0
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(None, connect=30.0)) as client,
            client.stream("POST", self.generate_url, json=payload, headers=headers) as response,
        ):
            async for line in response.aiter_lines():
                if not line.startswith("data:") or line.endswith("[DONE]"):
                    continue
                text = json.loads(line[len("data:") :])["text"]
                yield text[sent:]
                sent = len(text)
