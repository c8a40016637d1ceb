"""The scheduler: one thread that owns all KV state and runs the batching loop.

Each iteration: take new requests and control messages from the inbox; build a prefill batch
from the waiting queue (prefill has priority, as in SGLang); otherwise run one decode step for
every running request. The loop composes small managers:

    policy.order_waiting -> PrefillManager.build -> batch_builder -> ModelRunner.forward
    DecodeManager.ensure_memory (retraction) -> batch_builder -> ModelRunner.forward
    Sampler (grammar masks) -> OutputProcessor (logprobs, grammar, stop checks, jump-forward,
    outputs) -> CacheManager.release

Jump-forward: after a constrained request's token is sampled, the tokens its grammar forces are
appended at once. Its next step then has several pending tokens, so that step runs as one extend
batch (every running request extends by its pending tokens: one for most, more for those that
jumped) instead of a decode batch -- one forward pass for text that would take one per token.

Speculative decoding (`--speculative-algorithm ngram`, speculative.py): a decode step where some
request drafted runs as `verify.run_verify`, one extend pass over every request's pending tokens and
its drafts; the rest of the loop does not know about it.

Why a thread: torch releases the GIL inside every kernel, so the scheduler's Python time is the
only contention with the caller, and a thread shares the tokenizer with no serialisation of
tokens, logprobs and outputs.

The scheduler thread is the engine's only torch *compute* thread: it builds the model runner
itself (`start(make_runner)`), so weight loading and prepacking run there too. GNU OpenMP keeps one
worker pool per thread that ever opens a parallel region, and once the pools hold more threads than
there are cores its workers stop spinning between regions (libgomp's "throttled" spin). A second
pool -- say, the caller's thread loading the weights -- made every parallel kernel here ~2x slower
(batch-1 decode 33 ms instead of 23 ms on 2 cores). Callers must keep parallel torch work off their
own threads for the same reason.

Memory: after its last request finishes, the loop calls `release_free_memory` (malloc_trim) once,
then blocks on its inbox; without it a burst of huge requests leaves its freed token lists,
activations and tokenizer buffers resident in malloc's arenas for good. The trim runs on the
busy->idle edge only, never between steps (~0.5 ms after an ordinary request). The engine also
asks for one (`trim_when_idle`) after a request it refused, whose tokenization the scheduler never
saw. Before loading the model the thread pins malloc's thresholds (see memory.py).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import torch

from radixgen.runtime.config import EngineConfig
from radixgen.runtime.constrained import TokenMasker
from radixgen.runtime.memory import fix_malloc_thresholds, release_free_memory
from radixgen.runtime.model.runner import ModelRunner
from radixgen.runtime.request import FinishKind, FinishReason, Req
from radixgen.runtime.sampler import Sampler
from radixgen.runtime.scheduler.batch_builder import (
    build_decode,
    build_extend,
)
from radixgen.runtime.scheduler.cache_manager import CacheManager
from radixgen.runtime.scheduler.decode import DecodeManager
from radixgen.runtime.scheduler.mixed import MixedSteps
from radixgen.runtime.scheduler.output import OutputProcessor
from radixgen.runtime.scheduler.policy import order_waiting
from radixgen.runtime.scheduler.prefill import PrefillBatch, PrefillManager
from radixgen.runtime.scheduler.prefill_step import run_prefill
from radixgen.runtime.scheduler.speculative import Speculator
from radixgen.runtime.scheduler.verify import run_verify

logger = logging.getLogger(__name__)


def internal_error(req: Req) -> FinishReason:
    """An engine fault, as the request's caller sees it: its own id, nothing more."""
    return FinishReason(
        FinishKind.ABORT, message=f"internal error (request {req.rid})", status_code=500
    )


def finished_record(req: Req) -> dict[str, Any]:
    """What observers (metrics) learn of a finished request: outcome, token counts, latencies."""
    now = time.perf_counter()
    completion = len(req.output_ids)
    first = req.first_token_at
    return {
        "outcome": req.finish_reason.kind.value,
        "prompt_tokens": len(req.origin_input_ids),
        "completion_tokens": completion,
        "cached_tokens": req.cached_tokens,
        "e2e_latency": now - req.created_at,
        "ttft": None if first is None else first - req.created_at,
        "itl": None if first is None or completion < 2 else (now - first) / (completion - 1),
    }


OutputSink = Callable[[dict[str, Any]], None]


class Scheduler:
    def __init__(
        self,
        config: EngineConfig,
        tokenizer,
        eos_ids: frozenset[int],
        observer: Callable[[dict[str, Any]], None] | None = None,
    ):
        """The model runner and the KV managers exist only after `start()`."""
        self.config = config
        self.observer = observer
        self._active = 0  # submitted and not yet finished (any thread reads it)
        self._active_lock = threading.Lock()
        self.runner: ModelRunner | None = None
        self.cache: CacheManager | None = None
        self.prefill: PrefillManager | None = None
        self.decode: DecodeManager | None = None
        self.masker = TokenMasker(len(tokenizer))
        self.sampler = Sampler(eos_ids, self.masker)
        self.jump_forward = not config.disable_jump_forward
        self.outputs = OutputProcessor(tokenizer, eos_ids)
        self.speculator = Speculator(config, eos_ids) if config.speculative_algorithm else None
        self.waiting: list[Req] = []
        self.chunked: Req | None = None
        self.prefilling: list[Req] = []  # the batch being prefilled: in no queue until it ends
        self.sinks: dict[str, OutputSink] = {}
        self.inbox: queue.Queue = queue.Queue()
        self.counters = {
            "prompt_tokens": 0,
            "cached_tokens": 0,
            "generated_tokens": 0,
            "finished_requests": 0,
            "aborted_requests": 0,
            "forced_tokens": 0,
            "prefill_batches": 0,
            "prefill_tokens": 0,
            "prefill_seconds": 0.0,
            "decode_steps": 0,
            "decode_seconds": 0.0,
            "spec_verify_steps": 0,  # decode steps that verified n-gram drafts
            "spec_draft_tokens": 0,
            "spec_accepted_tokens": 0,
            "memory_trims": 0,
            "memory_trim_seconds": 0.0,
        }
        self.mixed = MixedSteps(self, config)  # adds its counters
        self._trim_pending = False  # work ran (or freed memory) since the last trim
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # --- thread-safe API -------------------------------------------------------------------

    def start(self, make_runner: Callable[[], ModelRunner]) -> None:
        """Start the scheduler thread, which builds the runner with `make_runner` and then
        serves; returns once the model is loaded, or raises what loading raised."""
        ready: Future = Future()
        self._thread = threading.Thread(
            target=self._run, args=(make_runner, ready), name="radixgen-scheduler", daemon=True
        )
        self._thread.start()
        ready.result()

    def _set_up(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.cache = CacheManager.for_pool(
            runner.kv_pool,
            runner.req_table,
            self.config.disable_radix_cache,
            runner.model_config.sliding_window,
        )
        self.prefill = PrefillManager(self.config, self.cache)
        self.decode = DecodeManager(self.cache)

    def shutdown(self) -> None:
        self._stop.set()
        self.inbox.put(("wake",))
        if self._thread is not None:
            self._thread.join(timeout=30)

    def submit(self, req: Req, sink: OutputSink) -> None:
        with self._active_lock:
            self._active += 1
        self.inbox.put(("add", req, sink))

    @property
    def active_requests(self) -> int:
        """Requests submitted and not finished: waiting, running or still in the inbox."""
        return self._active

    def abort(self, rid: str) -> None:
        """Abort the request whose engine key is `rid` (never a caller's label)."""
        self.inbox.put(("abort", rid))

    def abort_labelled(self, label: str, tenant: str | None) -> None:
        """Abort `tenant`'s requests labelled `label`, and the samples of a prompt so labelled."""
        self.inbox.put(("abort_labelled", label, tenant))

    def abort_tenant(self, tenant: str | None) -> None:
        """Abort every request of `tenant`."""
        self.inbox.put(("abort_tenant", tenant))

    def trim_when_idle(self) -> None:
        """Return freed heap memory to the OS as soon as nothing runs (see the module doc)."""
        self.inbox.put(("trim",))

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run `fn` on the scheduler thread between steps (consistent view of all state)."""
        future: Future = Future()
        self.inbox.put(("call", fn, future))
        return future

    # --- loop ------------------------------------------------------------------------------

    @property
    def is_idle(self) -> bool:
        return not self.waiting and not self.decode.running and self.chunked is None

    def _run(self, make_runner: Callable[[], ModelRunner], ready: Future) -> None:
        fix_malloc_thresholds()
        try:
            self._set_up(make_runner())
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        with torch.inference_mode():
            self._loop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._trim_pending and self.is_idle:
                self._release_memory()
            try:
                self._drain_inbox(block=self.is_idle)
                self._trim_pending |= not self.is_idle
                self.step()
            except Exception:  # never let one bad batch or message kill the engine
                logger.exception("scheduler step failed outside any request's stages")
                self._reset_after_fault()

    def _release_memory(self) -> None:
        self._trim_pending = False
        started = time.perf_counter()
        if release_free_memory():
            self.counters["memory_trims"] += 1
            self.counters["memory_trim_seconds"] += time.perf_counter() - started

    def _drain_inbox(self, block: bool) -> None:
        try:
            message = self.inbox.get(timeout=0.5) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            self._handle(message)
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "add":
            _, req, sink = message
            req.sampling_rng = random.Random(req.seed)
            self.sinks[req.rid] = sink
            if self.jump_forward and req.can_jump_forward:
                try:
                    self._jump_forward(req)  # text the grammar forces before any sampling
                except Exception as exc:  # its own grammar: it alone fails
                    self._fail(req, exc)
                if req.is_finished:
                    self._finish(req)
                    return
            self.waiting.append(req)
        elif kind == "abort":
            self._abort_where(lambda r: r.rid == message[1])
        elif kind == "abort_labelled":
            _, label, tenant = message
            self._abort_where(lambda r: r.tenant == tenant and label in (r.label, r.group))
        elif kind == "abort_tenant":
            self._abort_where(lambda r: r.tenant == message[1])
        elif kind == "trim":
            self._trim_pending = True
        elif kind == "call":
            _, fn, future = message
            try:
                future.set_result(fn())
            except Exception as exc:
                future.set_exception(exc)

    def step(self) -> None:
        limits = self.mixed.prefill_limits()  # None: this step is not mixed
        batch = self._next_prefill(limits)
        if batch is not None:
            self.prefilling = batch.reqs
            if limits is None:
                run_prefill(self, batch)
            else:
                self.mixed.run(batch)  # the running decodes advance in the same pass
            self.prefilling = []
        elif self.decode.running:
            self._run_decode()

    # --- prefill ---------------------------------------------------------------------------

    def _next_prefill(self, limits: tuple[int, int] | None = None) -> PrefillBatch | None:
        """Admit the next prefill batch; `limits` = (step_tokens, reserve) of a mixed step."""
        if not self.waiting and self.chunked is None:
            return None
        ordered = order_waiting(self.waiting, self.config.schedule_policy, self.cache)
        batch = self.prefill.build(
            ordered,
            self.decode.running,
            self.chunked,
            self.decode.new_token_ratio,
            *(limits or ()),
        )
        if batch is None:
            if not self.decode.running and self.chunked is None:
                self._reject_unservable()
            return None
        admitted = {id(r) for r in batch.reqs}
        self.waiting = [r for r in self.waiting if id(r) not in admitted]
        self.chunked = batch.chunked
        return batch

    def _reject_unservable(self) -> None:
        """Nothing runs and nothing could be admitted: the head of the queue can never fit."""
        req = self.waiting[0]
        self.waiting.pop(0)
        self._finish(
            req,
            FinishReason(
                FinishKind.ABORT,
                message=f"request needs {req.seq_len} KV slots plus its output, but only "
                f"{self.cache.available_tokens} can ever be free",
            ),
        )

    # --- decode ----------------------------------------------------------------------------

    def _run_decode(self) -> None:
        started = time.perf_counter()
        retracted = self.decode.ensure_memory()
        self.waiting[:0] = reversed(retracted)
        reqs = self.decode.running
        drafts = self.speculator and self.speculator.propose(reqs, self.cache.allocator.available)
        if drafts:
            run_verify(self, reqs, drafts, started)
            return
        pending = [r.pending_len for r in reqs]
        context = sum(r.kv_len for r in reqs)
        slots = self.cache.alloc_slots(sum(pending))
        if slots is None:
            self._abort_exhausted(reqs)
            return
        new_slots = {id(r): part for r, part in zip(reqs, slots.split(pending), strict=True)}
        table = self.runner.req_table

        def forward(batch_reqs: list[Req]) -> torch.Tensor:
            parts = [new_slots[id(r)] for r in batch_reqs]
            if all(r.pending_len == 1 for r in batch_reqs):
                return self.runner.forward(build_decode(batch_reqs, torch.cat(parts), table))
            # Some requests jumped forward: extend everyone by their pending tokens.
            for req, part in zip(batch_reqs, parts, strict=True):
                table.write(req.req_pool_row, req.kv_len, part)
            batch, layout = build_extend(batch_reqs, [r.pending_len for r in batch_reqs], table)
            return self.runner.forward(batch)[torch.tensor([r.sample_row for r in layout])]

        try:
            logits = forward(reqs)  # [B, V]
            stepped = reqs
        except Exception:
            logger.exception("a decode pass over %d requests failed; running each alone", len(reqs))
            rows = [self._alone(req, forward) for req in reqs]  # [1, V] or None
            for req, row in zip(reqs, rows, strict=True):
                if row is None:  # failed even alone: its new slots hold nothing
                    self.cache.allocator.free(new_slots[id(req)])
            stepped = [r for r, row in zip(reqs, rows, strict=True) if row is not None]
            logits = torch.cat([row for row in rows if row is not None]) if stepped else None
        for req in stepped:
            req.kv_len += len(new_slots[id(req)])
        if stepped:
            self._sample_and_append(stepped, logits)
        self.emit_and_retire(reqs)
        seconds = time.perf_counter() - started
        self.counters["decode_steps"] += 1
        self.counters["decode_seconds"] += seconds
        self.mixed.observe_decode(sum(pending), context, seconds)

    def emit_and_retire(self, reqs: list[Req]) -> None:
        """After a step: stream `reqs`' new output, then finish whoever is done."""
        self._emit(reqs)
        for req in self.decode.remove_finished():
            self._finish(req)

    def _abort_exhausted(self, reqs: list[Req]) -> None:
        """A lone request outgrew the whole pool (ensure_memory retracts all others)."""
        for req in list(reqs):
            self._finish(req, FinishReason(FinishKind.ABORT, message="KV cache exhausted"))
        self.decode.remove_finished()

    # --- shared steps ----------------------------------------------------------------------

    # --- request isolation ----------------------------------------------------------------

    def _forward_each(
        self, reqs: list[Req], forward: Callable[[list[Req]], list[Any]]
    ) -> list[Any | None]:
        """`forward(reqs)`: one result per request. If the batched pass fails, each request is
        run alone, so one request's failure costs nobody else anything; a request that fails
        alone gets None (and is finished with an internal error). `forward` must leave no
        trace when it raises: it only writes KV into slots no request has counted yet."""
        try:
            return forward(reqs)
        except Exception:
            logger.exception("a pass over %d requests failed; running each alone", len(reqs))
        results: list[Any | None] = []
        for req in reqs:
            result = self._alone(req, forward)
            results.extend([None] if result is None else result)
        return results

    def _alone(self, req: Req, forward: Callable[[list[Req]], Any]) -> Any | None:
        """`forward([req])`, or None after finishing `req` with an internal error."""
        try:
            return forward([req])
        except Exception as exc:
            self._fail(req, exc)
            return None

    def _fail(self, req: Req, exc: BaseException) -> None:
        """Finish `req` with an internal error: its caller gets a 500 naming the request's id,
        the details go to the log under that id, and no other request sees any of it."""
        logger.error("request %s (label %r) failed", req.rid, req.label, exc_info=exc)
        req.finish(internal_error(req))

    def _reset_after_fault(self) -> None:
        """The last resort when the engine's state can no longer be trusted (a pass failed that
        had published KV, or a step failed outside every request's stages): every active
        request ends with an internal error naming its own id, and the cache is dropped."""
        active = self._active_reqs()
        logger.error("engine reset: ending %d requests %s", len(active), [r.rid for r in active])
        self._abort_all_active(internal_error)
        self.cache.flush()

    def _sample_and_append(self, reqs: list[Req], logits: torch.Tensor) -> None:
        """logits [B, V], one row per request. Sampling is batched; if it fails, each request
        samples alone (the sampler leaves `logits` unchanged), and a request whose own
        sampling, grammar or stop check fails ends alone."""
        try:
            sampled = self.sampler.sample(logits, reqs)
            picks: list[tuple | None] = [sampled.pick(i) for i in range(len(reqs))]
        except Exception:
            logger.exception("sampling %d requests failed; sampling each alone", len(reqs))
            picks = []
            for i, req in enumerate(reqs):
                try:
                    picks.append(self.sampler.sample(logits[i : i + 1], [req]).pick(0))
                except Exception as exc:
                    self._fail(req, exc)
                    picks.append(None)
        for req, pick in zip(reqs, picks, strict=True):
            if pick is None:
                continue
            try:
                self.outputs.append_token(req, *pick)
                if self.jump_forward and req.can_jump_forward and not req.is_finished:
                    self._jump_forward(req)
            except Exception as exc:
                self._fail(req, exc)
        self.counters["generated_tokens"] += len(reqs)

    def _jump_forward(self, req: Req) -> None:
        forced = self.outputs.jump_forward(req)
        self.counters["forced_tokens"] += forced
        self.counters["generated_tokens"] += forced

    def _emit(self, reqs: list[Req]) -> None:
        for req in reqs:
            if req.stream and not req.is_finished:
                self._send(req)

    def _send(self, req: Req) -> None:
        sink = self.sinks.get(req.rid)
        if sink is None:
            return
        try:
            sink(self.outputs.make_output(req))
        except Exception as exc:  # its caller is gone (a closed event loop) or its output broke
            self.sinks.pop(req.rid, None)
            if not req.is_finished:
                self._fail(req, exc)

    def _finish(self, req: Req, reason: FinishReason | None = None) -> None:
        """Release a finished (or aborted) request's KV and send its final output."""
        if reason is not None:
            req.finish(reason)
        self.cache.release(req)
        self.counters["finished_requests"] += 1
        if req.finish_reason.kind is FinishKind.ABORT:
            self.counters["aborted_requests"] += 1
        self._send(req)
        self.sinks.pop(req.rid, None)
        with self._active_lock:
            self._active -= 1
        if self.observer is not None:
            self.observer(finished_record(req))

    def _active_reqs(self) -> list[Req]:
        """Every request not yet answered: queued, running, chunked, or in the batch whose step
        is under way (a request may be in two of these lists)."""
        active = [*self.waiting, *self.decode.running, *self.prefilling]
        if self.chunked is not None:
            active.append(self.chunked)
        unanswered = {r.rid: r for r in active if r.rid in self.sinks}  # one entry per request
        return list(unanswered.values())

    def _abort_where(self, chosen: Callable[[Req], bool]) -> None:
        """Abort the active requests `chosen` picks (between steps: none is mid-pass)."""
        reason = FinishReason(FinishKind.ABORT, message="aborted by request")
        for req in self._active_reqs():
            if not chosen(req):
                continue
            if req is self.chunked:
                self.chunked = None
            self.waiting = [r for r in self.waiting if r is not req]
            req.finish(reason)
            self.decode.remove_finished()
            self._finish(req)

    def _abort_all_active(self, reason_of: Callable[[Req], FinishReason]) -> None:
        """End every active request with `reason_of(req)` and empty every queue."""
        active = self._active_reqs()
        self.waiting, self.chunked, self.prefilling = [], None, []
        self.decode.running = []
        for req in active:
            self._finish(req, reason_of(req))

    # --- control ---------------------------------------------------------------------------

    def flush_cache(self) -> bool:
        """Drop the radix cache; refused (False) while requests are queued or running."""
        if not self.is_idle:
            return False
        self.cache.flush()
        return True

    def stats(self) -> dict[str, Any]:
        memory = self.cache.memory_stats()
        prompt = self.counters["prompt_tokens"]
        return {
            **memory,
            "kv_idle_invariant_ok": (
                not self.is_idle
                or memory["kv_free"] + memory["kv_evictable"] + memory["kv_protected"]
                == memory["kv_total"]
                and memory.get("swa_free", 0) + memory.get("swa_cached", 0)
                == memory.get("swa_total", 0)
            ),
            "running_requests": len(self.decode.running) + (self.chunked is not None),
            "waiting_requests": len(self.waiting),
            "retractions": self.decode.total_retractions,
            "cache_hit_rate": self.counters["cached_tokens"] / prompt if prompt else 0.0,
            "new_token_ratio": self.decode.new_token_ratio,
            "grammar_mask_seconds": self.masker.seconds,
            # multimodal models: images the vision encoder ran on / found in its cache
            "vision_encoded_images": self.runner.vision_cache.encoded if self.runner else 0,
            "vision_cache_hits": self.runner.vision_cache.hits if self.runner else 0,
            **self.counters,
        }
