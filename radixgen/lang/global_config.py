"""Process-wide settings of the frontend language (SGLang's `global_config`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class GlobalConfig:
    verbosity: int = 0
    """2 prints every program's text when it ends."""
    default_backend: Any = None
    """The backend `run`/`run_batch` use when none is passed (`set_default_backend`)."""
    skip_special_tokens_in_output: bool = True
    spaces_between_special_tokens_in_out: bool = True
    enable_precache_with_tracing: bool = True
    """`run_batch` traces the program and caches its constant prefix before running it."""
    enable_parallel_encoding: bool = True
    """`join("concate_and_append")` uses the backend's KV concatenation when it has one."""


global_config = GlobalConfig()
