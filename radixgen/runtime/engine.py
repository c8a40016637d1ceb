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
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import torch

from radixgen.runtime.cache.tree_snapshot import TreeSnapshot, take_snapshot
from radixgen.runtime.chat_templates import NO_TEMPLATE_HELP, ChatTemplate, load_chat_template
from radixgen.runtime.config import EngineConfig
from radixgen.runtime.constrained import GrammarCompiler
from radixgen.runtime.detokenizer import IncrementalDetokenizer
from radixgen.runtime.generate_input import GenerateInput
from radixgen.runtime.model.loader import resolve_model
from radixgen.runtime.model.runner import ModelRunner
from radixgen.runtime.multimodal import ImageLimits
from radixgen.runtime.multimodal.prompt import ImagePrompter
from radixgen.runtime.request import LogprobOptions, Req
from radixgen.runtime.sampling_params import InvalidRequestError, SamplingParams
from radixgen.runtime.scheduler.loop import Scheduler
from radixgen.runtime.tokenizer import encode_texts, eos_token_ids, load_tokenizer

logger = logging.getLogger(__name__)

Prompt = str | list[str] | None
InputIds = list[int] | list[list[int]] | None
ParamsInput = dict[str, Any] | SamplingParams | list[dict[str, Any] | SamplingParams] | None


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
        if self.config.chat_template is not None:
            self._use_chat_template(load_chat_template(self.config.chat_template))
        self.grammars = GrammarCompiler(self.tokenizer, self.model_config.vocab_size)
        self._seeds = random.Random(self.config.random_seed)
        self._submit_lock = threading.Lock()
        self.images: ImagePrompter | None = None  # LLaVA-style models: prompts take images
        vision = self.model_config.vision
        if vision is not None:
            limits = ImageLimits(
                self.config.max_images_per_request,
                self.config.max_image_bytes,
                self.config.max_image_pixels,
            )
            model_dir = self.source.path if self.source.format == "hf" else None
            self.images = ImagePrompter(vision, model_dir, limits)
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
        sampling_params: ParamsInput = None,
        input_ids: InputIds = None,
        return_logprob: bool = False,
        logprob_start_len: int | None = None,
        top_logprobs_num: int | None = None,
        return_text_in_logprobs: bool = False,
        stream: bool = False,
        rid: str | list[str] | None = None,
        tenant: str | None = None,
        image_data: str | list[Any] | None = None,
    ) -> dict[str, Any] | list[dict[str, Any]] | Iterator[dict[str, Any]]:
        """Generate for one prompt (-> dict) or a batch (-> list); `stream=True` -> iterator of
        cumulative outputs of a single request. With `n > 1`, sample k of request `rid` is
        labelled `f"{rid}_{k}"` (SGLang's convention). `rid` is only a label echoed in
        `meta_info["id"]` and used by `abort`; `tenant` scopes who may abort it. `image_data`
        (multimodal models): one prompt's image or list of images (data URLs, base64 or local
        paths), or a batch's list of those; the i-th image fills the prompt's i-th image
        token."""
        request = _input_of(locals())
        reqs, single = self.make_requests(request, tenant)
        if stream:
            return self._stream(reqs)
        inbox: queue.Queue = queue.Queue()
        self._submit(reqs, lambda i: lambda out: inbox.put((i, out)))
        results: dict[int, dict[str, Any]] = {}
        try:
            while len(results) < len(reqs):
                index, out = inbox.get()
                results[index] = out
        except BaseException:
            self._abort_reqs(reqs)
            raise
        return _in_order(results, single)

    def _stream(self, reqs: list[Req]) -> Iterator[dict[str, Any]]:
        if len(reqs) != 1:
            raise InvalidRequestError("stream=True takes a single prompt with n=1", "stream")
        inbox: queue.Queue = queue.Queue()
        self._submit(reqs, lambda i: inbox.put)
        finished = False
        try:
            while not finished:
                out = inbox.get()
                finished = out["meta_info"]["finish_reason"] is not None
                yield out
        finally:
            if not finished:
                self._abort_reqs(reqs)

    async def async_generate(
        self,
        prompt: Prompt = None,
        sampling_params: ParamsInput = None,
        input_ids: InputIds = None,
        return_logprob: bool = False,
        logprob_start_len: int | None = None,
        top_logprobs_num: int | None = None,
        return_text_in_logprobs: bool = False,
        stream: bool = False,
        rid: str | list[str] | None = None,
        tenant: str | None = None,
        image_data: str | list[Any] | None = None,
    ) -> dict[str, Any] | list[dict[str, Any]] | AsyncIterator[dict[str, Any]]:
        """Asyncio variant of `generate`; with `stream=True` returns an async iterator of the
        cumulative outputs of every request of the batch."""
        request = _input_of(locals())
        return await self.async_generate_input(request, tenant)

    async def async_generate_input(
        self, request: GenerateInput, tenant: str | None = None
    ) -> dict[str, Any] | list[dict[str, Any]] | AsyncIterator[dict[str, Any]]:
        """`async_generate` for an already validated input (the server's route bodies).
        Tokenizing and grammar compiling run in a worker thread: the event loop stays free."""
        try:
            reqs, single = await asyncio.to_thread(self.make_requests, request, tenant)
        except BaseException:
            self.scheduler.trim_when_idle()  # e.g. a huge prompt tokenized, then refused
            raise
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()
        self._submit(
            reqs, lambda i: lambda out: loop.call_soon_threadsafe(inbox.put_nowait, (i, out))
        )
        if request.stream:
            return self._async_stream(reqs, inbox)
        results: dict[int, dict[str, Any]] = {}
        try:
            while len(results) < len(reqs):
                index, out = await inbox.get()
                results[index] = out
        except BaseException:
            self._abort_reqs(reqs)
            raise
        return _in_order(results, single)

    async def _async_stream(self, reqs: list[Req], inbox: asyncio.Queue) -> AsyncIterator[dict]:
        pending = set(range(len(reqs)))
        try:
            while pending:
                index, out = await inbox.get()
                if out["meta_info"]["finish_reason"] is not None:
                    pending.discard(index)
                yield out
        finally:
            self._abort_reqs([reqs[i] for i in pending])

    # --- control ---------------------------------------------------------------------------

    def abort(self, rid: str, tenant: str | None = None) -> None:
        """Abort the active requests of `tenant` labelled `rid` (and the `n > 1` samples of
        such a request). Requests of other tenants are never touched."""
        self.scheduler.abort_labelled(rid, tenant)

    def abort_all(self, tenant: str | None = None) -> None:
        """Abort every queued and running request of `tenant` (in-process callers and a server
        without API keys have tenant None: every request)."""
        self.scheduler.abort_tenant(tenant)

    def _abort_reqs(self, reqs: list[Req]) -> None:
        for req in reqs:
            self.scheduler.abort(req.rid)

    def flush_cache(self) -> bool:
        """Drop all cached prefixes; False (nothing done) while requests are active."""
        return self.scheduler.call(self.scheduler.flush_cache).result()

    def stats(self) -> dict[str, Any]:
        return self.scheduler.call(self.scheduler.stats).result()

    def cache_snapshot(self) -> TreeSnapshot:
        """The radix tree copied between two scheduler steps (tree_snapshot.py): blocks until
        the current step ends, then holds the scheduler only for the copy."""
        scheduler = self.scheduler
        return scheduler.call(lambda: take_snapshot(scheduler.cache.tree)).result()

    def _use_chat_template(self, template: ChatTemplate) -> None:
        """Render chats with `template`; its end-of-turn token also ends generations."""
        self.tokenizer.chat_template = template.source
        if template.end_of_turn is not None:
            token = self.tokenizer.convert_tokens_to_ids(template.end_of_turn)
            if isinstance(token, int) and token != self.tokenizer.unk_token_id:
                self.eos_ids = self.eos_ids | {token}

    def apply_chat_template(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> str:
        """Render chat messages with the model's template, ready for the assistant's turn
        (`tools` reach templates that render them). A model without a template raises
        `InvalidRequestError` saying how to set one."""
        if not self.tokenizer.chat_template:
            raise InvalidRequestError(NO_TEMPLATE_HELP, "messages")
        return self.tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=True
        )

    @property
    def image_token(self) -> str | None:
        """The text of the token that marks an image's place in a prompt (None: text only)."""
        if self.images is None:
            return None
        return self.tokenizer.convert_ids_to_tokens(self.images.vision.image_token_id)

    def image_extra_tokens(self, images: int) -> int:
        """How much longer a prompt with `images` image tokens runs (each becomes a run)."""
        if self.images is None or not images:
            return 0
        return images * (self.images.vision.tokens_per_image - 1)

    @property
    def chat_template_renders_tools(self) -> bool:
        return "tools" in (self.tokenizer.chat_template or "")

    # --- request construction --------------------------------------------------------------

    def make_requests(
        self, request: GenerateInput, tenant: str | None = None
    ) -> tuple[list[Req], bool]:
        """Tokenize, check against the engine's limits, compile constraints: the requests of
        one input (prompts x n samples), and whether it was a single prompt. Heavy for large
        inputs: async callers run it in a worker thread."""
        prompts = request.prompts()
        config = self.config
        field = "text" if request.text is not None else "input_ids"
        if len(prompts) > config.max_batch_prompts:
            raise InvalidRequestError(
                f"a request takes at most {config.max_batch_prompts} prompts, got {len(prompts)}",
                field,
            )
        params_list = request.params_for(len(prompts))
        labels = request.labels_for(len(prompts))
        sequences = sum(p.n for p in params_list)
        for params in params_list:
            if params.n > config.max_n:
                raise InvalidRequestError(f"n must be at most {config.max_n}, got {params.n}", "n")
        if sequences > config.max_request_sequences:
            raise InvalidRequestError(
                f"a request makes at most {config.max_request_sequences} sequences "
                f"(prompts x n), got {sequences}",
                "n",
            )
        queued = config.max_queued_requests
        capacity = None if queued is None else config.max_running_requests + queued
        if capacity is not None and sequences > capacity:
            raise InvalidRequestError(
                f"the request makes {sequences} sequences but the server holds at most "
                f"{capacity} (max_running_requests + max_queued_requests)",
                "n",
            )
        if request.text is not None:
            token_lists = encode_texts(self.tokenizer, prompts)
        else:
            token_lists = [list(ids) for ids in prompts]
        logprob = _logprob_options(request)
        stream = bool(request.stream)
        image_lists = request.images_for(len(prompts))
        reqs: list[Req] = []
        for ids, params, label, sources in zip(
            token_lists, params_list, labels, image_lists, strict=True
        ):
            text_ids = ids
            ids, images = self._with_images(ids, sources, logprob)
            self._validate(ids, params, field, text_ids)
            grammar = self.grammars.compile(params)  # raises on an invalid constraint
            group = label or uuid.uuid4().hex
            for k in range(params.n):
                seed = (
                    params.sampling_seed + k
                    if params.sampling_seed is not None
                    else self._seeds.getrandbits(63)
                )
                reqs.append(
                    Req(
                        rid=uuid.uuid4().hex,
                        label=group if params.n == 1 else f"{group}_{k}",
                        group=group,
                        tenant=tenant,
                        origin_input_ids=ids,
                        sampling_params=params,
                        logprob=logprob,
                        images=images,
                        detokenizer=IncrementalDetokenizer(
                            self.tokenizer,
                            text_ids,
                            params.stop,
                            params.skip_special_tokens,
                            params.no_stop_trim,
                            params.stop_regex or (),
                        ),
                        stream=stream,
                        seed=seed,
                        grammar=grammar if grammar is None or k == 0 else grammar.fork(),
                    )
                )
        return reqs, request.is_single and len(reqs) == 1

    def _submit(self, reqs: list[Req], sink_of: Callable[[int], Callable]) -> None:
        """Hand `reqs` to the scheduler, all or none: refused while the queue is full. The check
        and the hand-over are one step, so concurrent callers cannot overfill the queue."""
        queued = self.config.max_queued_requests
        with self._submit_lock:
            if queued is not None:
                active = self.scheduler.active_requests
                if active + len(reqs) > self.config.max_running_requests + queued:
                    raise EngineOverloadedError(
                        f"the request queue is full ({active} requests active)"
                    )
            for index, req in enumerate(reqs):
                self.scheduler.submit(req, sink_of(index))

    def _with_images(self, ids: list[int], sources: list[str], logprob: LogprobOptions):
        """The prompt with its images' placeholder runs, and where they sit."""
        if self.images is None:
            if sources:
                raise InvalidRequestError("this model takes no images", "image_data")
            return ids, ()
        padded, images = self.images.expand(ids, self.images.load(sources))
        if images and logprob.return_logprob and 0 <= logprob.logprob_start_len < images[-1].end:
            raise InvalidRequestError(
                f"prompt logprobs cannot cover image positions: logprob_start_len must be at "
                f"least {images[-1].end} (where the last image ends) for this prompt",
                "logprob_start_len",
            )
        return padded, images

    def _validate(
        self, ids: list[int], params: SamplingParams, field: str, text_ids: list[int]
    ) -> None:
        """`field`: the input's name for the prompt (`text` or `input_ids`); `ids` is the
        prompt with image placeholders, `text_ids` without them."""
        vocab = self.model_config.vocab_size
        params.verify(vocab)
        if not ids:
            raise InvalidRequestError("the prompt is empty", field)
        if text_ids and max(text_ids) >= vocab:
            raise InvalidRequestError(f"input_ids must be integers in [0, {vocab})", "input_ids")
        total = len(ids) + params.max_new_tokens
        if total > self.context_len:
            raise InvalidRequestError(
                f"This model's maximum context length is {self.context_len} tokens. However, you "
                f"requested {total} tokens ({len(ids)} in the prompt, {params.max_new_tokens} for "
                "the completion). Please reduce the length of the prompt or completion.",
                param="max_new_tokens" if len(ids) < self.context_len else field,
                code="context_length_exceeded",
            )
        if total > self.config.kv_cache_tokens:
            raise InvalidRequestError(
                f"the request needs up to {total} KV slots but the KV pool holds "
                f"{self.config.kv_cache_tokens}; lower max_new_tokens or raise kv_cache_tokens",
                param="max_new_tokens",
            )


def _input_of(arguments: dict[str, Any]) -> GenerateInput:
    """The validated input of a `generate` / `async_generate` call, from its arguments (the
    engine's API says `prompt` where SGLang's input says `text`)."""
    fields = {name: arguments[name] for name in GenerateInput.model_fields if name in arguments}
    return GenerateInput.of(text=arguments["prompt"], **fields)


def _logprob_options(request: GenerateInput) -> LogprobOptions:
    start = request.logprob_start_len
    return LogprobOptions(
        return_logprob=bool(request.return_logprob),
        logprob_start_len=-1 if start is None else start,
        top_logprobs_num=request.top_logprobs_num or 0,
        return_text_in_logprobs=bool(request.return_text_in_logprobs),
    )


def _in_order(results: dict[int, dict[str, Any]], single: bool):
    ordered = [results[i] for i in range(len(results))]
    return ordered[0] if single else ordered
