"""OpenAI-compatible routes: `/v1/models`, `/v1/completions`, `/v1/chat/completions`.

Both generation routes translate the request into one engine batch (prompts x n samples, in the
OpenAI order p0c0, p0c1, p1c0, ...), then shape the outputs. Streams send one choice per chunk,
exactly one chunk with a finish_reason per choice, an optional usage chunk with `choices: []`,
then `data: [DONE]`; an error after the headers goes in-band before `[DONE]`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request

from radixgen.runtime.engine import Engine
from radixgen.runtime.tokenizer import encode_texts
from radixgen.runtime.validation import InvalidRequestError
from radixgen.server import openai_format as fmt
from radixgen.server.chat_images import message_content, template_takes_parts
from radixgen.server.context import engine_of, served_model_name, tenant_of
from radixgen.server.errors import (
    APIError,
    output_error,
    params_renamed,
    raise_on_errors,
    stream_error_event,
)
from radixgen.server.protocol import ChatCompletionRequest, CompletionRequest
from radixgen.server.streaming import DONE_EVENT, event_stream, sse, until_disconnect
from radixgen.server.structured import constraint_params
from radixgen.server.tools import ToolPlan, plan_tools, render_tool_history

logger = logging.getLogger(__name__)
router = APIRouter()
# Engine names -> the OpenAI bodies' names, for errors the engine raises.
_OPENAI_FIELDS = {
    "text": "prompt",
    "input_ids": "prompt",
    "max_new_tokens": "max_tokens",
    "min_new_tokens": "min_tokens",
    "sampling_seed": "seed",
}
_CHAT_FIELDS = {
    **_OPENAI_FIELDS,
    "input_ids": "messages",
    "max_new_tokens": "max_tokens",
    "image_data": "messages",
}


# --- models ---------------------------------------------------------------------------------


def _model_card(request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    return {
        "id": served_model_name(request),
        "object": "model",
        "created": 0,
        "owned_by": "radixgen",
        "root": served_model_name(request),  # never a file-system path
        "max_model_len": engine.context_len,
    }


@router.get("/v1/models")
async def list_models(request: Request):
    return {"object": "list", "data": [_model_card(request)]}


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request):
    _check_model(request, model_id)
    return _model_card(request)


def _check_model(request: Request, model: str | None) -> None:
    accepted = {served_model_name(request), request.app.state.settings.engine.model}
    if model is not None and model not in accepted:
        raise APIError(404, f"The model `{model}` does not exist.", "model", "model_not_found")


# --- shared request translation ----------------------------------------------------------------


def _sampling_params(body, max_new_tokens: int) -> dict[str, Any]:
    params = {
        "max_new_tokens": max_new_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "stop": body.stop,
        "stop_regex": body.stop_regex,
        "sampling_seed": body.seed,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "logit_bias": body.logit_bias,
        "n": body.n,
        "top_k": body.top_k,
        "min_p": body.min_p,
        "repetition_penalty": body.repetition_penalty,
        "min_new_tokens": body.min_tokens,
        "ignore_eos": body.ignore_eos,
        "skip_special_tokens": body.skip_special_tokens,
        "stop_token_ids": body.stop_token_ids,
        "no_stop_trim": body.no_stop_trim,
    }
    return {k: v for k, v in params.items() if v is not None}


def _check_stream_options(body) -> bool:
    if body.stream_options is not None and not body.stream:
        raise APIError(400, "stream_options is only allowed with stream=true", "stream_options")
    return bool(body.stream and body.stream_options and body.stream_options.include_usage)


@dataclass
class _Batch:
    """One OpenAI request as an engine batch: which engine id is which choice."""

    response_id: str
    model: str
    n: int
    num_prompts: int
    created: int = field(default_factory=lambda: int(time.time()))

    def rids(self) -> list[str]:
        return [f"{self.response_id}-{i}" for i in range(self.num_prompts)]

    def index_of(self) -> dict[str, int]:
        ids = {}
        for i, rid in enumerate(self.rids()):
            for k in range(self.n):
                ids[rid if self.n == 1 else f"{rid}_{k}"] = i * self.n + k
        return ids

    def head(self, kind: str) -> dict[str, Any]:
        return {
            "id": self.response_id,
            "object": kind,
            "created": self.created,
            "model": self.model,
        }


async def _stream_choices(
    outputs: AsyncIterator[dict[str, Any]],
    batch: _Batch,
    kind: str,
    make_choice: Callable[[dict[str, Any], int, str, bool], dict[str, Any] | None],
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """Turn cumulative engine outputs into per-choice delta chunks."""
    index_of = batch.index_of()
    sent: dict[int, int] = {}
    finals: dict[int, dict[str, Any]] = {}
    try:
        async for out in outputs:
            index = index_of[out["meta_info"]["id"]]
            first = index not in sent
            previous = sent.get(index, 0)
            sent[index] = len(out["text"])
            finished = out["meta_info"]["finish_reason"] is not None
            if finished:
                finals[index] = out
                error = output_error(out)
                if error is not None:
                    yield stream_error_event(error[1], error[0])
                    break
            choice = make_choice(out, index, out["text"][previous:], first)
            if choice is None:
                continue
            chunk = {**batch.head(kind), "choices": [choice]}
            if include_usage:
                chunk["usage"] = None
            yield sse(chunk)
        else:
            if include_usage:
                ordered = [finals[i] for i in sorted(finals)]
                yield sse({**batch.head(kind), "choices": [], "usage": fmt.usage(ordered, batch.n)})
    except Exception:  # after the 200 headers: report in-band, details in the log
        logger.exception("stream of %s %s failed", kind, batch.response_id)
        yield stream_error_event("internal server error", 500)
    yield DONE_EVENT


# --- /v1/completions -------------------------------------------------------------------------


def _completion_prompts(engine: Engine, prompt) -> tuple[dict[str, Any], list[str], int]:
    """Engine prompt kwargs, the prompt texts (for echo) and the number of prompts."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise APIError(400, "prompt must not be empty", "prompt")
    if isinstance(prompt[0], str):
        return {"prompt": list(prompt)}, list(prompt), len(prompt)
    token_lists = [prompt] if isinstance(prompt[0], int) else list(prompt)
    if any(not ids for ids in token_lists):
        raise APIError(400, "prompt must not be empty", "prompt")
    vocab = engine.model_config.vocab_size
    if any(not 0 <= t < vocab for ids in token_lists for t in ids):
        raise APIError(400, f"prompt token ids must be in [0, {vocab})", "prompt")
    texts = [engine.tokenizer.decode(ids) for ids in token_lists]
    return {"input_ids": token_lists}, texts, len(token_lists)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    engine = engine_of(request)
    _check_model(request, body.model)
    include_usage = _check_stream_options(body)
    if body.suffix:
        raise APIError(400, "suffix is not supported", "suffix")
    if body.best_of not in (None, 1, body.n):
        raise APIError(400, "best_of other than n is not supported", "best_of")
    max_tokens = 16 if body.max_tokens is None else body.max_tokens
    if max_tokens < 1 and not (body.echo and max_tokens == 0):
        raise APIError(400, "max_tokens must be at least 1", "max_tokens")
    prompt_kwargs, texts, num_prompts = await asyncio.to_thread(
        _completion_prompts, engine, body.prompt
    )
    batch = _Batch(
        body.rid or f"cmpl-{uuid.uuid4().hex}", served_model_name(request), body.n, num_prompts
    )
    want_logprobs = body.logprobs is not None
    kwargs = dict(
        tenant=tenant_of(request),
        **prompt_kwargs,
        sampling_params={**_sampling_params(body, max_tokens), **constraint_params(body)},
        rid=batch.rids(),
        return_logprob=want_logprobs,
        top_logprobs_num=body.logprobs or 0,
        logprob_start_len=0 if (body.echo and want_logprobs) else None,
        return_text_in_logprobs=True,
    )

    def logprobs_of(out: dict[str, Any], echo: bool, start: int, prefix: str = ""):
        if not want_logprobs:
            return None
        meta = out["meta_info"]
        entries = meta["output_token_logprobs"][start:]
        tops = meta.get("output_top_logprobs")
        tops = tops[start:] if tops is not None else None
        if echo:
            entries = meta["input_token_logprobs"] + entries
            tops = None if tops is None else meta["input_top_logprobs"] + tops
        return fmt.completion_logprobs(
            entries, tops if body.logprobs else None, len(prefix) if not echo else 0
        )

    if body.stream:
        with params_renamed(_OPENAI_FIELDS):
            outputs = await engine.async_generate(**kwargs, stream=True)
        sent_tokens: dict[int, int] = {}

        def make_choice(out, index, delta, first):
            finished = fmt.finish_reason(out["meta_info"])
            echo_text = texts[index // body.n] if (body.echo and first) else ""
            start = sent_tokens.get(index, 0)
            lps = logprobs_of(out, body.echo and first, start)
            sent_tokens[index] = len(out["output_ids"])
            if not (delta or finished or echo_text or (lps and lps["tokens"])):
                return None
            return {
                "index": index,
                "text": echo_text + delta,
                "logprobs": lps,
                "finish_reason": finished,
            }

        return event_stream(
            _stream_choices(outputs, batch, "text_completion", make_choice, include_usage)
        )
    with params_renamed(_OPENAI_FIELDS):
        outputs = await until_disconnect(request, engine.async_generate(**kwargs))
    raise_on_errors(outputs)
    choices = []
    for index, out in enumerate(outputs):
        prefix = texts[index // body.n] if body.echo else ""
        choices.append(
            {
                "index": index,
                "text": prefix + out["text"],
                "logprobs": logprobs_of(out, body.echo, 0),
                "finish_reason": fmt.finish_reason(out["meta_info"]),
            }
        )
    return {
        **batch.head("text_completion"),
        "choices": choices,
        "usage": fmt.usage(outputs, body.n),
    }


# --- /v1/chat/completions --------------------------------------------------------------------


def _chat_input_ids(
    engine: Engine, body: ChatCompletionRequest, plan: ToolPlan | None, images: list[str]
) -> list[int]:
    """The rendered prompt's tokens; the messages' image URLs are appended to `images`."""
    messages = []
    as_parts = template_takes_parts(engine)
    if as_parts and plan is not None:  # tool prompts are written into text content
        raise APIError(400, "tools are not supported with this model's chat template", "tools")
    for index, message in enumerate(body.messages):
        content = message_content(engine, message, index, images, as_parts)
        role = "system" if message.role == "developer" else message.role
        rendered = {"role": role, "content": content or ""}
        if message.tool_calls:
            rendered["tool_calls"] = message.tool_calls
        messages.append(rendered)
    tools = None
    if plan is not None and engine.chat_template_renders_tools:
        tools = [{"type": "function", "function": f} for f in plan.tools.values()]
    else:
        messages = [render_tool_history(m) for m in messages]
        if plan is not None:
            if messages[0]["role"] == "system":
                messages[0]["content"] += "\n" + plan.system_prompt()
            else:
                messages.insert(0, {"role": "system", "content": plan.system_prompt()})
    try:
        text = engine.apply_chat_template(messages, tools)
    except InvalidRequestError:  # no template: the engine's message says how to set one
        raise
    except Exception as exc:  # jinja errors on message orders the template rejects
        raise APIError(
            400, f"messages cannot be rendered by the chat template: {exc}", "messages"
        ) from exc
    return encode_texts(engine.tokenizer, [text], add_special_tokens=False)[0]


def _tool_calls(plan: ToolPlan | None, out: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The calls a finished output makes (None: it is plain content)."""
    if plan is None or fmt.finish_reason(out["meta_info"]) != "stop":
        return None
    return plan.parse(out["text"])


def _chat_message(plan: ToolPlan | None, out: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The assistant message of a finished choice and its finish_reason."""
    calls = _tool_calls(plan, out)
    if calls:
        return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
    return {"role": "assistant", "content": out["text"]}, fmt.finish_reason(out["meta_info"])


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    engine = engine_of(request)
    _check_model(request, body.model)
    include_usage = _check_stream_options(body)
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs requires logprobs=true", "top_logprobs")
    plan = plan_tools(body.tools, body.tool_choice, body.parallel_tool_calls)
    constraint = constraint_params(body)
    if plan is not None and plan.constraint:
        if constraint:
            raise APIError(
                400,
                "a structured-output constraint cannot be combined with tool_choice "
                f"{body.tool_choice!r}",
                "tool_choice",
            )
        constraint = plan.constraint
    images: list[str] = []
    input_ids = await asyncio.to_thread(_chat_input_ids, engine, body, plan, images)  # off loop
    max_tokens, field = body.max_completion_tokens, "max_completion_tokens"
    if max_tokens is None:
        max_tokens, field = body.max_tokens, "max_tokens"
    if max_tokens is not None and max_tokens < 1:
        raise APIError(400, f"{field} must be at least 1", field)
    if max_tokens is None:
        prompt_len = len(input_ids) + engine.image_extra_tokens(len(images))
        room = min(engine.context_len, engine.config.kv_cache_tokens) - prompt_len
        max_tokens = max(room, 1)
    batch = _Batch(
        body.rid or f"chatcmpl-{uuid.uuid4().hex}", served_model_name(request), body.n, 1
    )
    top = body.top_logprobs or 0
    kwargs = dict(
        tenant=tenant_of(request),
        input_ids=[input_ids],
        sampling_params={**_sampling_params(body, max_tokens), **constraint},
        rid=batch.rids(),
        return_logprob=body.logprobs,
        top_logprobs_num=top,
        return_text_in_logprobs=True,
        image_data=[images] if images else None,
    )

    def logprobs_of(out: dict[str, Any], start: int):
        if not body.logprobs:
            return None
        meta = out["meta_info"]
        tops = meta.get("output_top_logprobs") if top else None
        return fmt.chat_logprobs(
            meta["output_token_logprobs"][start:], tops[start:] if tops else None
        )

    if body.stream:
        with params_renamed(_CHAT_FIELDS):
            outputs = await engine.async_generate(**kwargs, stream=True)
        sent_tokens: dict[int, int] = {}

        def make_choice(out, index, delta, first):
            finished = fmt.finish_reason(out["meta_info"])
            lps = logprobs_of(out, sent_tokens.get(index, 0))
            sent_tokens[index] = len(out["output_ids"])
            if plan is not None:  # a call is only known complete: send it whole at the end
                delta = out["text"] if finished else ""
                calls = _tool_calls(plan, out) if finished else None
                if calls:
                    delta = ""
                    finished = "tool_calls"
            else:
                calls = None
            if not (first or delta or finished):
                return None
            message: dict[str, Any] = {"role": "assistant"} if first else {}
            if delta or (first and not calls):
                message["content"] = delta
            if calls:
                message["tool_calls"] = [{"index": i, **c} for i, c in enumerate(calls)]
            return {"index": index, "delta": message, "logprobs": lps, "finish_reason": finished}

        return event_stream(
            _stream_choices(outputs, batch, "chat.completion.chunk", make_choice, include_usage)
        )
    with params_renamed(_CHAT_FIELDS):
        outputs = await until_disconnect(request, engine.async_generate(**kwargs))
    raise_on_errors(outputs)
    choices = []
    for index, out in enumerate(outputs):
        message, finish = _chat_message(plan, out)
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": logprobs_of(out, 0),
                "finish_reason": finish,
            }
        )
    return {
        **batch.head("chat.completion"),
        "choices": choices,
        "usage": fmt.usage(outputs, body.n),
    }
