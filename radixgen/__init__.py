"""radixgen: a structured generation language and a RadixAttention serving runtime.

`import radixgen as sgl` runs SGLang frontend programs: the language API below, over the
in-process `Engine`, a `RuntimeEndpoint` (HTTP), a launched `Runtime`, or `OpenAI` (lazy).
"""

from typing import Any

from radixgen.lang.api import (
    Runtime,
    assistant,
    assistant_begin,
    assistant_end,
    flush_cache,
    function,
    gen,
    gen_int,
    gen_string,
    get_server_info,
    image,
    select,
    separate_reasoning,
    set_default_backend,
    system,
    system_begin,
    system_end,
    user,
    user_begin,
    user_end,
    video,
)
from radixgen.lang.backend.runtime_endpoint import RuntimeEndpoint
from radixgen.lang.choices import (
    greedy_token_selection,
    token_length_normalized,
    unconditional_likelihood_normalized,
)
from radixgen.lang.global_config import global_config
from radixgen.runtime.config import EngineConfig
from radixgen.runtime.engine import Engine
from radixgen.runtime.sampling_params import InvalidRequestError, SamplingParams
from radixgen.version import __version__

__all__ = [
    "Engine",
    "EngineConfig",
    "InvalidRequestError",
    "OpenAI",
    "Runtime",
    "RuntimeEndpoint",
    "SamplingParams",
    "__version__",
    "assistant",
    "assistant_begin",
    "assistant_end",
    "flush_cache",
    "function",
    "gen",
    "gen_int",
    "gen_string",
    "get_server_info",
    "global_config",
    "greedy_token_selection",
    "image",
    "select",
    "separate_reasoning",
    "set_default_backend",
    "system",
    "system_begin",
    "system_end",
    "token_length_normalized",
    "unconditional_likelihood_normalized",
    "user",
    "user_begin",
    "user_end",
    "video",
]


def __getattr__(name: str) -> Any:
    """`OpenAI` imports the optional `openai` package only when used."""
    if name == "OpenAI":
        from radixgen.lang.backend.openai import OpenAI

        return OpenAI
    raise AttributeError(f"module 'radixgen' has no attribute {name!r}")
