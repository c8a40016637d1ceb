"""`Engine`: the in-process API of the runtime (SGLang's offline `Engine` shape).

    engine = Engine(model="smollm2")
    out = engine.generate("The capital of France is", {"max_new_tokens": 8, "temperature": 0})
    out["text"], out["output_ids"], out["meta_info"]["cached_tokens"]

`generate` takes one prompt or a batch (text or token ids), returns a dict or a list of dicts, or
with `stream=True` an iterator of cumulative outputs. `async_generate` is the asyncio twin. Caller
mistakes raise `InvalidRequestError` naming the field, before anything reaches the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import torch

from radixgen.runtime.config import EngineConfig
from radixgen.runtime.constrained import GrammarCompiler
from radixgen.runtime.detokenizer import IncrementalDetokenizer
from radixgen.runtime.model.loader import resolve_model
from radixgen.runtime.model.runner import ModelRunner
from radixgen.runtime.request import LogprobOptions, Req
from radixgen.runtime.sampling_params import InvalidRequestError, SamplingParams
from radixgen.runtime.scheduler.loop import Scheduler
from radixgen.runtime.tokenizer import encode_texts, eos_token_ids, load_tokenizer

logger = logging.getLogger(__name__)

Prompt = str | list[str] | None
InputIds = list[int] | list[list[int]] | None


class EngineOverloadedError(RuntimeError):
    """The waiting queue is full (`max_queued_requests`); retry later."""


class Engine:
    def __init__(
        self,
        config: EngineConfig | None = None,
        observer: Callable[[dict[str, Any]], None] | None = None,
        **options: Any,
    ):
        """`observer`, if given, is called on the scheduler thread with a small record of
        every finished request (outcome, token counts, latencies); keep it cheap."""
        self.config = config.replace(**options) if config else EngineConfig(**options)
        torch.set_num_threads(self.config.num_threads or os.cpu_count() or 1)
        self.source = resolve_model(self.config.model)
        self.model_config = self.source.read_config()
        self.context_len = self.config.context_length or self.model_config.max_position_embeddings
        self.tokenizer = load_tokenizer(self.source)
        self.eos_ids = eos_token_ids(self.tokenizer, self.model_config.eos_token_ids)
        self.grammars = GrammarCompiler(self.tokenizer, self.model_config.vocab_size)
        self._seeds = random.Random(self.config.random_seed)
        self.scheduler = Scheduler(self.config, self.tokenizer, self.eos_ids, observer)
        # Loaded on the scheduler thread: it must be the only thread running parallel kernels.
        self.scheduler.start(
            lambda: ModelRunner(self.source, self.model_config, self.config, self.context_len)
        )

    # --- lifecycle -------------------------------------------------------------------------

    def shutdown(self) -> None:
        self.scheduler.shutdown()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # --- generation ------------------------------------------------------------------------

    def generate(
        self,
        prompt: Prompt = None,
        sampling_params: dict[str, Any] | list[dict[str, Any]] | None = None,
        input_ids: InputIds = None,
        return_logprob: bool = False,
        logprob_start_len: int | None = None,
        top_logprobs_num: int | None = None,
        return_text_in_logprobs: bool = False,
        stream: bool = False,
        rid: str | list[str] | None = None,
    ) -> dict[str, Any] | list[dict[str, Any]] | Iterator[dict[str, Any]]:
        """Generate for one prompt (-> dict) or a batch (-> list); `stream=True` -> iterator of
        cumulative outputs of a single request. With `n > 1`, sample k of request `rid` gets the
        id `f"{rid}_{k}"` (SGLang's convention)."""
        logprob = _logprob_options(
            return_logprob, logprob_start_len, top_logprobs_num, return_text_in_logprobs
        )
        reqs, single = self._make_requests(prompt, sampling_params, input_ids, logprob, stream, rid)
        if stream:
            return self._stream(reqs)
        inbox: queue.Queue = queue.Queue()
        for req in reqs:
            self.scheduler.submit(req, inbox.put)
        results: dict[str, dict[str, Any]] = {}
        try:
            while len(results) < len(reqs):
                _collect(results, inbox.get())
        except BaseException:
            self._abort_all(reqs)
            raise
        return _in_order(reqs, results, single)

    def _stream(self, reqs: list[Req]) -> Iterator[dict[str, Any]]:
        if len(reqs) != 1:
            raise InvalidRequestError("stream=True takes a single prompt with n=1", "stream")
        inbox: queue.Queue = queue.Queue()
        self.scheduler.submit(reqs[0], inbox.put)
        finished = False
        try:
            while not finished:
                out = inbox.get()
                finished = out["meta_info"]["finish_reason"] is not None
                yield out
        finally:
            if not finished:
                self.abort(reqs[0].rid)

    async def async_generate(
        self,
        prompt: Prompt = None,
        sampling_params: dict[str, Any] | list[dict[str, Any]] | None = None,
        input_ids: InputIds = None,
        return_logprob: bool = False,
        logprob_start_len: int | None = None,
        top_logprobs_num: int | None = None,
        return_text_in_logprobs: bool = False,
        stream: bool = False,
        rid: str | list[str] | None = None,
    ) -> dict[str, Any] | list[dict[str, Any]] | AsyncIterator[dict[str, Any]]:
        """Asyncio variant of `generate`; with `stream=True` returns an async iterator of the
        cumulative outputs of every request of the batch."""
        logprob = _logprob_options(
            return_logprob, logprob_start_len, top_logprobs_num, return_text_in_logprobs
        )
        make = (prompt, sampling_params, input_ids, logprob, stream, rid)
        try:  # tokenization and grammar compilation stay off the event loop
            reqs, single = await asyncio.to_thread(self._make_requests, *make)
        except BaseException:
            self.scheduler.trim_when_idle()  # e.g. a huge prompt tokenized, then refused
            raise
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()
        for req in reqs:
            self.scheduler.submit(req, lambda out: loop.call_soon_threadsafe(inbox.put_nowait, out))
        if stream:
            return self._async_stream(reqs, inbox)
        results: dict[str, dict[str, Any]] = {}
        try:
            while len(results) < len(reqs):
                _collect(results, await inbox.get())
        except BaseException:
            self._abort_all(reqs)
            raise
        return _in_order(reqs, results, single)

    async def _async_stream(self, reqs: list[Req], inbox: asyncio.Queue) -> AsyncIterator[dict]:
        pending = {r.rid for r in reqs}
        try:
            while pending:
                out = await inbox.get()
                if out["meta_info"]["finish_reason"] is not None:
                    pending.discard(out["meta_info"]["id"])
                yield out
        finally:
            for rid in pending:
                self.abort(rid)

    # --- control ---------------------------------------------------------------------------

    def abort(self, rid: str) -> None:
        self.scheduler.abort(rid)

    def abort_all(self) -> None:
        """Abort every queued and running request."""
        self.scheduler.abort_all()

    def _abort_all(self, reqs: list[Req]) -> None:
        for req in reqs:
            self.abort(req.rid)

    def flush_cache(self) -> bool:
        """Drop all cached prefixes; False (nothing done) while requests are active."""
        return self.scheduler.call(self.scheduler.flush_cache).result()

    def stats(self) -> dict[str, Any]:
        return self.scheduler.call(self.scheduler.stats).result()

    def apply_chat_template(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> str:
        """Render chat messages with the model's template, ready for the assistant's turn
        (`tools` reach templates that render them)."""
        return self.tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=True
        )

    @property
    def chat_template_renders_tools(self) -> bool:
        return "tools" in (self.tokenizer.chat_template or "")

    # --- request construction --------------------------------------------------------------

    def _make_requests(
        self,
        prompt: Prompt,
        sampling_params: dict[str, Any] | list[dict[str, Any]] | None,
        input_ids: InputIds,
        logprob: LogprobOptions,
        stream: bool,
        rid: str | list[str] | None,
    ) -> tuple[list[Req], bool]:
        if (prompt is None) == (input_ids is None):
            raise InvalidRequestError("exactly one of prompt and input_ids is required", "prompt")
        if prompt is not None:
            single = isinstance(prompt, str)
            texts = [prompt] if single else list(prompt)
            if not all(isinstance(t, str) for t in texts):
                raise InvalidRequestError("prompt must be a string or a list of strings", "prompt")
            token_lists = encode_texts(self.tokenizer, texts)
        else:
            single = bool(input_ids) and isinstance(input_ids[0], int)
            token_lists = [list(input_ids)] if single else [list(x) for x in input_ids]
        if not token_lists:
            raise InvalidRequestError("the batch is empty", "prompt")
        params_list = sampling_params if isinstance(sampling_params, list) else None
        if params_list is not None and len(params_list) != len(token_lists):
            raise InvalidRequestError(
                "sampling_params list must match the batch size", "sampling_params"
            )
        rids = rid if isinstance(rid, list) else None
        reqs: list[Req] = []
        for i, ids in enumerate(token_lists):
            params = SamplingParams.from_dict(params_list[i] if params_list else sampling_params)
            self._validate(ids, params)
            grammar = self.grammars.compile(params)  # raises on an invalid constraint
            base = rids[i] if rids else (rid if isinstance(rid, str) and single else None)
            base = base or uuid.uuid4().hex
            for k in range(params.n):
                seed = (
                    params.sampling_seed + k
                    if params.sampling_seed is not None
                    else self._seeds.getrandbits(63)
                )
                reqs.append(
                    Req(
                        rid=base if params.n == 1 else f"{base}_{k}",
                        origin_input_ids=ids,
                        sampling_params=params,
                        logprob=logprob,
                        detokenizer=IncrementalDetokenizer(
                            self.tokenizer,
                            ids,
                            params.stop,
                            params.skip_special_tokens,
                            params.no_stop_trim,
                        ),
                        stream=stream,
                        seed=seed,
                        grammar=grammar if grammar is None or k == 0 else grammar.fork(),
                    )
                )
        if len({r.rid for r in reqs}) != len(reqs):
            raise InvalidRequestError("duplicate request ids in the batch", "rid")
        queued = self.config.max_queued_requests
        capacity = None if queued is None else self.config.max_running_requests + queued
        if capacity is not None and self.scheduler.active_requests + len(reqs) > capacity:
            raise EngineOverloadedError(
                f"the request queue is full ({self.scheduler.active_requests} requests active)"
            )
        return reqs, single and len(reqs) == 1

    def _validate(self, ids: list[int], params: SamplingParams) -> None:
        vocab = self.model_config.vocab_size
        params.verify(vocab)
        if not ids:
            raise InvalidRequestError("the prompt is empty", "prompt")
        if not all(isinstance(t, int) and 0 <= t < vocab for t in ids):
            raise InvalidRequestError(f"input_ids must be integers in [0, {vocab})", "input_ids")
        for name in ("structural_tag", "stop_regex"):
            if getattr(params, name) is not None:
                raise InvalidRequestError(f"{name} is not supported yet", name)
        total = len(ids) + params.max_new_tokens
        if total > self.context_len:
            raise InvalidRequestError(
                f"This model's maximum context length is {self.context_len} tokens. However, you "
                f"requested {total} tokens ({len(ids)} in the prompt, {params.max_new_tokens} for "
                "the completion). Please reduce the length of the prompt or completion.",
                param="max_new_tokens" if len(ids) < self.context_len else "prompt",
                code="context_length_exceeded",
            )
        if total > self.config.kv_cache_tokens:
            raise InvalidRequestError(
                f"the request needs up to {total} KV slots but the KV pool holds "
                f"{self.config.kv_cache_tokens}; lower max_new_tokens or raise kv_cache_tokens",
                param="max_new_tokens",
            )


def _logprob_options(
    return_logprob: bool, start_len: int | None, top_num: int | None, with_text: bool
) -> LogprobOptions:
    options = LogprobOptions(
        return_logprob=bool(return_logprob),
        logprob_start_len=-1 if start_len is None else int(start_len),
        top_logprobs_num=int(top_num or 0),
        return_text_in_logprobs=bool(with_text),
    )
    if options.logprob_start_len < -1:
        raise InvalidRequestError("logprob_start_len must be >= -1", "logprob_start_len")
    if options.top_logprobs_num < 0:
        raise InvalidRequestError("top_logprobs_num must be >= 0", "top_logprobs_num")
    return options


def _collect(results: dict[str, dict[str, Any]], out: dict[str, Any]) -> None:
    results[out["meta_info"]["id"]] = out


def _in_order(reqs: list[Req], results: dict[str, dict[str, Any]], single: bool):
    ordered = [results[r.rid] for r in reqs]
    return ordered[0] if single else ordered
