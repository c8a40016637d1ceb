"""`SglFunction`: what `@function` makes of a Python function whose first parameter is `s`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

from radixgen.lang.backend_choice import resolve_backend
from radixgen.lang.compiler import compile_func
from radixgen.lang.ir import SglSamplingParams
from radixgen.lang.program_runner import cache_program, run_program, run_program_batch
from radixgen.lang.state import ProgramState
from radixgen.lang.tracer import TracingScope, trace_program


def _sampling_defaults(**values: Any) -> SglSamplingParams:
    values["stop"] = values["stop"] or ()
    values["stop_token_ids"] = values["stop_token_ids"] or ()
    return SglSamplingParams(**values)


class SglFunction:
    def __init__(
        self,
        func: Callable[..., Any],
        num_api_spec_tokens: int | None = None,
        bind_arguments: dict[str, Any] | None = None,
    ):
        """`num_api_spec_tokens` turns on API speculative execution (OpenAI backend)."""
        self.func = func
        self.num_api_spec_tokens = num_api_spec_tokens
        self.bind_arguments = dict(bind_arguments or {})
        params = list(inspect.signature(func).parameters.values())
        if not params or params[0].name != "s":
            raise TypeError(f"the first parameter of {func.__name__} must be named `s`")
        self.arg_names = [p.name for p in params[1:]]
        self.arg_defaults = [p.default for p in params[1:] if p.default is not p.empty]
        functools.update_wrapper(self, func)

    def bind(self, **kwargs: Any) -> SglFunction:
        """A copy with some arguments fixed (partial application)."""
        unknown = set(kwargs) - set(self.arg_names)
        if unknown:
            raise TypeError(f"{self.func.__name__} has no parameters {sorted(unknown)}")
        return SglFunction(self.func, self.num_api_spec_tokens, {**self.bind_arguments, **kwargs})

    def run(
        self,
        *args: Any,
        max_new_tokens: int = 128,
        stop: str | list[str] = (),
        stop_token_ids: list[int] = (),
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = -1,
        min_p: float = 0.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        ignore_eos: bool = False,
        return_logprob: bool | None = None,
        logprob_start_len: int | None = None,
        top_logprobs_num: int | None = None,
        return_text_in_logprobs: bool | None = None,
        stream: bool = False,
        backend: Any = None,
        **kwargs: Any,
    ) -> ProgramState:
        """Run the program; the sampling values are the defaults of every gen in it (note the
        default temperature 1.0: a gen samples unless it or `run` says otherwise)."""
        defaults = _sampling_defaults(
            max_new_tokens=max_new_tokens,
            stop=stop,
            stop_token_ids=stop_token_ids,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
            ignore_eos=ignore_eos,
            return_logprob=return_logprob,
            logprob_start_len=logprob_start_len,
            top_logprobs_num=top_logprobs_num,
            return_text_in_logprobs=return_text_in_logprobs,
        )
        return run_program(self, backend, args, kwargs, defaults, stream)

    def run_batch(
        self,
        batch_kwargs: list[dict[str, Any]] | list[tuple | list],
        *,
        max_new_tokens: int = 128,
        stop: str | list[str] = (),
        stop_token_ids: list[int] = (),
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = -1,
        min_p: float = 0.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        ignore_eos: bool = False,
        return_logprob: bool | None = None,
        logprob_start_len: int | None = None,
        top_logprobs_num: int | None = None,
        return_text_in_logprobs: bool | None = None,
        backend: Any = None,
        num_threads: int | str = "auto",
        progress_bar: bool = False,
        generator_style: bool = False,
    ) -> list[ProgramState] | Iterator[ProgramState]:
        """Run the program once per item (dicts of arguments, or tuples of positional ones)
        on `num_threads` threads ("auto": max(96, 16 x cores), at most the batch size)."""
        if not batch_kwargs:
            return []
        batch = [self._as_kwargs(item) for item in batch_kwargs]
        defaults = _sampling_defaults(
            max_new_tokens=max_new_tokens,
            stop=stop,
            stop_token_ids=stop_token_ids,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
            ignore_eos=ignore_eos,
            return_logprob=return_logprob,
            logprob_start_len=logprob_start_len,
            top_logprobs_num=top_logprobs_num,
            return_text_in_logprobs=return_text_in_logprobs,
        )
        return run_program_batch(
            self, backend, batch, defaults, num_threads, progress_bar, generator_style
        )

    def _as_kwargs(self, item: dict[str, Any] | tuple | list) -> dict[str, Any]:
        if isinstance(item, dict):
            return item
        required = len(self.arg_names) - len(self.arg_defaults)
        if not required <= len(item) <= len(self.arg_names):
            raise TypeError(f"{self.func.__name__} takes {required}..{len(self.arg_names)} args")
        return dict(zip(self.arg_names, item, strict=False))

    def trace(self, *, backend: Any = None, **kwargs: Any):
        """Record the program as a graph of nodes without running it (unknown arguments
        become placeholders); returns the `TracerProgramState`."""
        return trace_program(self, kwargs, backend)

    def cache(self, backend: Any = None) -> str:
        """Cache the program's constant prefix on the backend; returns the prefix."""
        return cache_program(self, resolve_backend(backend))

    def compile(self, *, backend: Any = None):
        """A `CompiledFunction`: the traced graph, run with independent streams in parallel."""
        return compile_func(self, backend)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the program, or, called inside a traced program, trace it into that trace."""
        scope = TracingScope.get_current_scope()
        if scope is None:
            return self.run(*args, **kwargs)
        kwargs.update(zip(self.arg_names, args, strict=False))
        kwargs.pop("backend", None)
        return self.trace(backend=scope.tracer_state.backend, **kwargs)
