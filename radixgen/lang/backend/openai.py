"""`OpenAI`: a backend for any OpenAI-compatible API (the `openai` SDK, imported lazily).

    backend = OpenAI("model-id", base_url="http://127.0.0.1:30000/v1", api_key="unused",
                     is_chat_model=False, chat_template=get_chat_template("chatml"))

Completion models get the whole program text as the prompt; chat models get the closed turns
(`s.messages_`), so a gen must directly follow `assistant` unless API speculative execution is
on (`@function(num_api_spec_tokens=N)`, see speculative.py).

`select` on completion models scores the choices with prompt logprobs: `echo=True`,
`logprobs=0`, `max_tokens=0` (radixgen's /v1/completions and vLLM accept this; OpenAI's own API
no longer does), mirroring the native backend's scoring, token-healing window included. Token
ids are not part of that answer, so the unconditional method re-sends each choice span's text.
`token_usage` counts prompt/completion tokens and requests (thread-safe).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from radixgen.lang.backend.base import BaseBackend
from radixgen.lang.chat_template import ChatTemplate, get_chat_template_by_model_path
from radixgen.lang.choices import ChoicesDecision, ChoicesSamplingMethod, heal_choice_spans
from radixgen.lang.ir import SglSamplingParams

if TYPE_CHECKING:
    from radixgen.lang.interpreter import StreamExecutor

INSTRUCT_MODEL_NAMES = ("gpt-3.5-turbo-instruct",)  # completion-only models among OpenAI's


@dataclass
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, usage: Any) -> None:
        with self._lock:
            self.requests += 1
            if usage is not None:
                self.prompt_tokens += usage.prompt_tokens
                self.completion_tokens += usage.completion_tokens

    def reset(self) -> None:
        with self._lock:
            self.prompt_tokens = self.completion_tokens = self.requests = 0


class OpenAI(BaseBackend):
    def __init__(
        self,
        model_name: str,
        is_chat_model: bool | None = None,
        chat_template: ChatTemplate | str | None = None,
        is_azure: bool = False,
        *args: Any,
        **kwargs: Any,
    ):
        """Extra arguments (`base_url`, `api_key`, ...) go to `openai.OpenAI` (or
        `openai.AzureOpenAI`). `is_chat_model` defaults to True except for known instruct
        models; the template defaults to SGLang's path rules on `model_name`."""
        super().__init__()
        import openai

        self._openai = openai
        client_cls = openai.AzureOpenAI if is_azure else openai.OpenAI
        self.client = client_cls(*args, **kwargs)
        self.model_name = model_name
        if isinstance(chat_template, str):
            from radixgen.lang.chat_template import get_chat_template

            chat_template = get_chat_template(chat_template)
        self.chat_template = chat_template or get_chat_template_by_model_path(model_name)
        if is_chat_model is None:
            is_chat_model = model_name not in INSTRUCT_MODEL_NAMES
        self.is_chat_model = is_chat_model
        self.chat_prefix = self.chat_template.role_prefix_and_suffix["assistant"][0]
        self.token_usage = TokenUsage()

    # --- calls -------------------------------------------------------------------------------

    def _complete(self, prompt: Any, **kwargs: Any) -> Any:
        ret = self.client.completions.create(model=self.model_name, prompt=prompt, **kwargs)
        self.token_usage.add(ret.usage)
        return ret

    def complete_chat(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        """One chat completion; returns the message text."""
        if kwargs.get("stop") is None:
            kwargs.pop("stop", None)
        ret = self.client.chat.completions.create(
            model=self.model_name, messages=messages, **kwargs
        )
        self.token_usage.add(ret.usage)
        return ret.choices[0].message.content or ""

    def _chat_messages(self, s: StreamExecutor) -> list[dict[str, Any]]:
        if not s.text_.endswith(self.chat_prefix):
            raise RuntimeError(
                "for chat models a gen must directly follow `assistant` (or use API "
                "speculative execution: @function(num_api_spec_tokens=...))"
            )
        return s.messages_

    # --- BaseBackend ---------------------------------------------------------------------------

    def generate(self, s: StreamExecutor, sampling_params: SglSamplingParams):
        params = sampling_params
        kwargs = {**params.to_openai_kwargs(), **self._constraint_kwargs(params)}
        if params.dtype is not None and self.is_chat_model:
            raise NotImplementedError("typed gens (dtype) need a completion model")
        if self.is_chat_model:
            text = self.complete_chat(self._chat_messages(s), **kwargs)
            return text, {}
        prompt = s.text_
        if params.dtype in (str, "str", "string"):
            kwargs["stop"] = '"'
            prompt += '"'
        elif params.dtype in (int, "int"):
            kwargs["stop"] = [" ", "\n"]  # no digit logit_bias: the server's vocab is unknown
        ret = self._complete(prompt, **kwargs)
        texts = [c.text for c in ret.choices]
        if params.dtype in (str, "str", "string"):
            texts = [f'"{t}"' for t in texts]
        return texts[0], _meta_info(ret)

    def _constraint_kwargs(self, params: SglSamplingParams) -> dict[str, Any]:
        """A gen's regex / JSON schema / stop regexes as request fields: chat models get the
        standard `response_format` for a schema; the rest travel as the `regex` /
        `json_schema` / `stop_regex` extensions that radixgen, SGLang and vLLM-style servers
        read. A server that knows none rejects the request rather than answering
        unconstrained or unstopped."""
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        if params.json_schema is not None:
            schema = params.json_schema
            if self.is_chat_model:
                parsed = json.loads(schema) if isinstance(schema, str) else schema
                spec = {"name": "output", "schema": parsed}
                kwargs["response_format"] = {"type": "json_schema", "json_schema": spec}
            else:
                extra["json_schema"] = schema if isinstance(schema, str) else json.dumps(schema)
        elif params.regex is not None:
            extra["regex"] = params.regex
        if params.stop_regex:
            extra["stop_regex"] = params.stop_regex
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

    def generate_stream(self, s: StreamExecutor, sampling_params: SglSamplingParams):
        kwargs = {**sampling_params.to_openai_kwargs(), **self._constraint_kwargs(sampling_params)}
        if self.is_chat_model:
            if kwargs.get("stop") is None:
                kwargs.pop("stop")
            chunks = self.client.chat.completions.create(
                model=self.model_name,
                messages=self._chat_messages(s),
                stream=True,
                stream_options={"include_usage": True},
                **kwargs,
            )
        else:
            chunks = self.client.completions.create(
                model=self.model_name,
                prompt=s.text_,
                stream=True,
                stream_options={"include_usage": True},
                **kwargs,
            )
        for chunk in chunks:
            if chunk.usage is not None:
                self.token_usage.add(chunk.usage)
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            piece = choice.delta.content if self.is_chat_model else choice.text
            if piece:
                yield piece, {}

    def select(
        self,
        s: StreamExecutor,
        choices: list[str],
        temperature: float,
        choices_method: ChoicesSamplingMethod,
    ) -> ChoicesDecision:
        if self.is_chat_model:
            raise NotImplementedError("select needs a completion model (prompt logprobs)")
        scoring = {"max_tokens": 0, "echo": True, "logprobs": 0, "temperature": 0}
        prompt_len = self._complete(s.text_, **scoring).usage.prompt_tokens
        start = max(prompt_len - 2, 0)
        ret = self._complete([s.text_ + c for c in choices], **scoring)
        spans = []
        for choice in sorted(ret.choices, key=lambda c: c.index):
            lps = choice.logprobs
            span = [[lp, None, tok] for lp, tok in zip(lps.token_logprobs, lps.tokens, strict=True)]
            span = span[start:]
            if span:
                span[0][0] = None  # as the native API: the window's first entry has no logprob
            spans.append(span)
        spans, normalized = heal_choice_spans(s.text_, spans)
        unconditional = None
        if choices_method.requires_unconditional_logprobs:
            unconditional = self._unconditional(spans)
        return choices_method(
            choices=choices,
            normalized_prompt_logprobs=normalized,
            input_token_logprobs=spans,
            output_token_logprobs=[[] for _ in choices],
            unconditional_token_logprobs=unconditional,
        )

    def _unconditional(self, spans: list[list[list[Any]]]) -> list[list[list[Any]]]:
        texts = ["".join(e[2] for e in span) for span in spans]
        ret = self._complete(texts, max_tokens=0, echo=True, logprobs=0, temperature=0)
        out = []
        for choice, span in zip(sorted(ret.choices, key=lambda c: c.index), spans, strict=True):
            lps = choice.logprobs
            entries = [[lp, None, t] for lp, t in zip(lps.token_logprobs, lps.tokens, strict=True)]
            if len(entries) != len(span):
                raise ValueError(
                    "a choice re-tokenizes differently on its own; unconditional scoring needs "
                    "token ids, which this API does not return"
                )
            out.append(entries)
        return out


def _meta_info(ret: Any) -> dict[str, Any]:
    usage = ret.usage
    meta: dict[str, Any] = {"finish_reason": ret.choices[0].finish_reason}
    if usage is not None:
        meta["prompt_tokens"] = usage.prompt_tokens
        meta["completion_tokens"] = usage.completion_tokens
        details = getattr(usage, "prompt_tokens_details", None)
        if details is not None:
            meta["cached_tokens"] = details.cached_tokens
    return meta
