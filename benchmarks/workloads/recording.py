"""Every request a system receives, as sent, for token counts and the optimal hit rate.

A `RequestLog` is filled by thin subclasses of the language's backends that see each request at
the transport seam (`_post_generate` of the native protocol, `_complete` of the OpenAI one), so
forks' prefill-only commits and `select`'s scoring requests are recorded too. Prompts are kept
as sent (text or token ids) and tokenized after the timed run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from radixgen.lang.backend.engine_backend import EngineBackend
from radixgen.lang.backend.openai import OpenAI
from radixgen.runtime.engine import Engine


@dataclass(frozen=True)
class Request:
    prompt: str | list[int]
    """The prompt as sent: text, or token ids."""
    completion_tokens: int
    output: str | list[int] = ""
    """The generated text, or its token ids when the system returns them."""
    logprob_start: int | None = None
    """First prompt position whose logprob was requested: positions from here on must be
    computed even when cached (a KV cache holds keys and values, not logits)."""
    max_new_tokens: int | None = None
    """The request's output budget, when the system's protocol says (the engine reserves KV
    for it: a request fits a pool only with prompt + max_new_tokens slots)."""


@dataclass(frozen=True)
class TokenizedRequest:
    prompt: list[int]
    output: list[int]
    logprob_start: int | None
    max_new_tokens: int | None = None


class RequestLog:
    """Thread-safe list of requests, in the order their answers arrived."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Request] = []

    def add(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    def reset(self) -> None:
        with self._lock:
            self._requests = []

    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def token_ids(self, tokenize: Callable[[str], list[int]]) -> list[TokenizedRequest]:
        """Every request in token ids; texts are tokenized by `tokenize` (the tokenizer the
        system itself uses; an output text tokenized on its own approximates its ids)."""
        ids = lambda x: x if isinstance(x, list) else (tokenize(x) if x else [])
        return [
            TokenizedRequest(ids(r.prompt), ids(r.output), r.logprob_start, r.max_new_tokens)
            for r in self.requests()
        ]


def _as_list(prompt: Any) -> list[Any]:
    """One request's prompt or a batch of them -> a list of prompts."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        return [prompt]
    return list(prompt)


class RecordingEngineBackend(EngineBackend):
    """The in-process backend, recording every native request body it runs."""

    def __init__(self, engine: Engine, log: RequestLog):
        super().__init__(engine)
        self.log = log

    def _post_generate(self, payload: dict[str, Any]) -> Any:
        out = super()._post_generate(payload)
        prompts = _as_list(payload["text"] if "text" in payload else payload["input_ids"])
        outs = out if isinstance(out, list) else [out]
        start = payload.get("logprob_start_len") if payload.get("return_logprob") else None
        budget = payload.get("sampling_params", {}).get("max_new_tokens")
        for prompt, o in zip(prompts, outs, strict=True):
            meta = o["meta_info"]
            self.log.add(Request(prompt, meta["completion_tokens"], o["output_ids"], start, budget))
        return out


class RecordingOpenAI(OpenAI):
    """The OpenAI-compatible backend, recording every completion request."""

    def __init__(self, model_name: str, log: RequestLog, **kwargs: Any):
        super().__init__(model_name, **kwargs)
        self.log = log

    def _complete(self, prompt: Any, **kwargs: Any) -> Any:
        ret = super()._complete(prompt, **kwargs)
        completion = ret.usage.completion_tokens if ret.usage is not None else 0
        start = 0 if kwargs.get("echo") and kwargs.get("logprobs") is not None else None
        texts = [c.text for c in sorted(ret.choices, key=lambda c: c.index)]
        for i, p in enumerate(_as_list(prompt)):  # usage is per call: credit it to the first
            output = "" if kwargs.get("echo") else texts[i]
            self.log.add(Request(p, completion if i == 0 else 0, output, start))
        return ret
