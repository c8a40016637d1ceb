"""The in-process backend: programs call a `radixgen.Engine` directly, no HTTP.

`set_default_backend(radixgen.Engine(...))` and `run(backend=engine)` wrap the engine here
(`engine_backend`, one wrapper per engine). Requests are the native protocol's bodies, passed to
`Engine.generate` as keyword arguments.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from radixgen.lang.backend.native_protocol import NativeBackend, Output
from radixgen.lang.chat_template import choose_chat_template
from radixgen.runtime.engine import Engine
from radixgen.version import __version__

_REQUEST_FIELDS = (
    "input_ids",
    "sampling_params",
    "return_logprob",
    "logprob_start_len",
    "top_logprobs_num",
    "return_text_in_logprobs",
    "image_data",
)


class EngineBackend(NativeBackend):
    def __init__(self, engine: Engine, chat_template_name: str | None = None):
        """The chat template: `chat_template_name`, else SGLang's path rules on the model
        path, else the shape of the model's own Jinja template (ChatML for SmolLM2)."""
        super().__init__()
        self.engine = engine
        self.chat_template = choose_chat_template(
            chat_template_name,
            str(engine.source.path),
            getattr(engine.tokenizer, "chat_template", None),
        )

    def _engine_kwargs(self, payload: dict[str, Any]) -> dict[str, Any]:
        kwargs = {k: payload[k] for k in _REQUEST_FIELDS if k in payload}
        if "text" in payload:
            kwargs["prompt"] = payload["text"]
        return kwargs

    def _post_generate(self, payload: dict[str, Any]) -> Output | list[Output]:
        return self.engine.generate(**self._engine_kwargs(payload))

    def _stream_generate(self, payload: dict[str, Any]) -> Iterator[Output]:
        return self.engine.generate(**self._engine_kwargs(payload), stream=True)

    def get_model_name(self) -> str:
        return str(self.engine.source.path)

    def flush_cache(self) -> bool:
        """True if the cache was flushed (False while requests are running)."""
        return self.engine.flush_cache()

    def get_server_info(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self.engine.config),
            **self.engine.stats(),
            "version": __version__,
            "context_length": self.engine.context_len,
        }

    def shutdown(self) -> None:
        self.engine.shutdown()


_wrappers: weakref.WeakKeyDictionary[Engine, EngineBackend] = weakref.WeakKeyDictionary()
_wrappers_lock = threading.Lock()


def engine_backend(engine: Engine) -> EngineBackend:
    """The one `EngineBackend` of `engine` (created on first use)."""
    with _wrappers_lock:
        backend = _wrappers.get(engine)
        if backend is None:
            backend = _wrappers[engine] = EngineBackend(engine)
        return backend
