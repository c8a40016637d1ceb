"""The language's public primitives (`import radixgen as sgl`; SGLang's `sglang.lang.api`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from radixgen.lang.backend.runtime import Runtime as Runtime  # re-exported, as in SGLang
from radixgen.lang.backend_choice import resolve_backend
from radixgen.lang.choices import ChoicesSamplingMethod, token_length_normalized
from radixgen.lang.function import SglFunction
from radixgen.lang.global_config import global_config
from radixgen.lang.ir import (
    SglExpr,
    SglExprList,
    SglGen,
    SglImage,
    SglRoleBegin,
    SglRoleEnd,
    SglSelect,
    SglSeparateReasoning,
    SglVideo,
    as_expr,
)


def function(func: Callable[..., Any] | None = None, num_api_spec_tokens: int | None = None):
    """Make a program of `func(s, ...)`: `@function` or `@function(num_api_spec_tokens=64)`."""
    if func is not None:
        return SglFunction(func, num_api_spec_tokens=num_api_spec_tokens)
    return lambda f: SglFunction(f, num_api_spec_tokens=num_api_spec_tokens)


def set_default_backend(backend: Any) -> None:
    """The backend of every `run`/`run_batch` that passes none. A `radixgen.Engine` is wrapped
    in the in-process backend; a `Runtime` means its endpoint."""
    global_config.default_backend = resolve_backend(backend)


def flush_cache(backend: Any = None, empty_cache: bool = True) -> Any:
    """Drop the backend's cached prefixes; False if there is no backend."""
    if backend is None and global_config.default_backend is None:
        return False
    backend = resolve_backend(backend)
    return backend.flush_cache() if empty_cache else backend.flush_cache(empty_cache=False)


def get_server_info(backend: Any = None) -> dict[str, Any] | None:
    """The runtime's configuration and counters; None if there is no backend."""
    if backend is None and global_config.default_backend is None:
        return None
    return resolve_backend(backend).get_server_info()


def _json_schema(schema: Any) -> str | None:
    """A JSON string, from a string, a dict, or a pydantic model class."""
    if schema is None or isinstance(schema, str):
        return schema
    if hasattr(schema, "model_json_schema"):
        schema = schema.model_json_schema()
    return json.dumps(schema)


def gen(
    name: str | None = None,
    max_tokens: int | None = None,
    min_tokens: int | None = None,
    n: int | None = None,
    stop: str | list[str] | None = None,
    stop_token_ids: list[int] | None = None,
    stop_regex: str | list[str] | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    frequency_penalty: float | None = None,
    presence_penalty: float | None = None,
    ignore_eos: bool | None = None,
    return_logprob: bool | None = None,
    logprob_start_len: int | None = None,
    top_logprobs_num: int | None = None,
    return_text_in_logprobs: bool | None = None,
    dtype: Any = None,
    choices: list[str] | None = None,
    choices_method: ChoicesSamplingMethod | None = None,
    regex: str | None = None,
    json_schema: Any = None,
) -> SglExpr:
    """Generate into variable `name`. Unset parameters take `run()`'s values. With `choices`
    this is a `select` (temperature 0 unless given). `regex` is checked here; `json_schema`
    may be a JSON string, a dict or a pydantic model class."""
    if choices:
        return SglSelect(
            name,
            choices,
            0.0 if temperature is None else temperature,
            choices_method or token_length_normalized,
        )
    if regex is not None:
        try:
            re.compile(regex)
        except re.error as exc:
            raise ValueError(f"invalid regex {regex!r}: {exc}") from exc
    return SglGen(
        name,
        max_new_tokens=max_tokens,
        min_new_tokens=min_tokens,
        n=n,
        stop=stop,
        stop_token_ids=stop_token_ids,
        stop_regex=stop_regex,
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
        dtype=dtype,
        regex=regex,
        json_schema=_json_schema(json_schema),
    )


def _typed_gen(dtype: type, name: str | None, **params: Any) -> SglGen:
    max_new_tokens = params.pop("max_tokens")
    return SglGen(name, max_new_tokens=max_new_tokens, dtype=dtype, **params)


def gen_int(
    name: str | None = None,
    max_tokens: int | None = None,
    n: int | None = None,
    stop: str | list[str] | None = None,
    stop_token_ids: list[int] | None = None,
    stop_regex: str | list[str] | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    frequency_penalty: float | None = None,
    presence_penalty: float | None = None,
    ignore_eos: bool | None = None,
    return_logprob: bool | None = None,
    logprob_start_len: int | None = None,
    top_logprobs_num: int | None = None,
    return_text_in_logprobs: bool | None = None,
) -> SglGen:
    """Generate an integer (regex `REGEX_INT` on runtime backends, stops at space/newline)."""
    params = dict(locals())
    return _typed_gen(int, params.pop("name"), **params)


def gen_string(
    name: str | None = None,
    max_tokens: int | None = None,
    n: int | None = None,
    stop: str | list[str] | None = None,
    stop_token_ids: list[int] | None = None,
    stop_regex: str | list[str] | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    frequency_penalty: float | None = None,
    presence_penalty: float | None = None,
    ignore_eos: bool | None = None,
    return_logprob: bool | None = None,
    logprob_start_len: int | None = None,
    top_logprobs_num: int | None = None,
    return_text_in_logprobs: bool | None = None,
) -> SglGen:
    """Generate a double-quoted string (regex `REGEX_STR` on runtime backends)."""
    params = dict(locals())
    return _typed_gen(str, params.pop("name"), **params)


def select(
    name: str | None = None,
    choices: list[str] | None = None,
    temperature: float = 0.0,
    choices_method: ChoicesSamplingMethod = token_length_normalized,
) -> SglSelect:
    """Append the choice that best continues the text (scored by prompt logprobs)."""
    if not choices:
        raise ValueError("select needs a non-empty list of choices")
    return SglSelect(name, choices, temperature, choices_method)


def image(expr: str) -> SglImage:
    return SglImage(expr)


def video(path: str, num_frames: int) -> SglVideo:
    return SglVideo(path, num_frames)


def _role(role: str, expr: Any) -> SglExprList:
    body = as_expr("" if expr is None else expr)
    return SglExprList([SglRoleBegin(role), body, SglRoleEnd(role)])


def system(expr: Any = None) -> SglExprList:
    return _role("system", expr)


def user(expr: Any = None) -> SglExprList:
    return _role("user", expr)


def assistant(expr: Any = None) -> SglExprList:
    return _role("assistant", expr)


def system_begin() -> SglRoleBegin:
    return SglRoleBegin("system")


def system_end() -> SglRoleEnd:
    return SglRoleEnd("system")


def user_begin() -> SglRoleBegin:
    return SglRoleBegin("user")


def user_end() -> SglRoleEnd:
    return SglRoleEnd("user")


def assistant_begin() -> SglRoleBegin:
    return SglRoleBegin("assistant")


def assistant_end() -> SglRoleEnd:
    return SglRoleEnd("assistant")


def separate_reasoning(expr: Any = None, model_type: str | None = None) -> SglExprList:
    """After `expr` (a gen) runs, split `<think>...</think>` off its value into the variable
    `<name>_reasoning_content`."""
    return SglExprList([as_expr(expr), SglSeparateReasoning(model_type, expr)])
