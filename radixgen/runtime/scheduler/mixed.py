"""Mixed steps: running decodes advance in the forward pass of a prefill chunk (SGLang's mixed
chunked prefill, `EngineConfig.enable_mixed_chunk`).

Without mixing, prefill has priority: while prompts arrive, every running request waits whole
prefill steps between two of its tokens (a 1024-token chunk is ~0.5 s on 2 cores). A mixed step
carries every running request's pending tokens (one, or more after a jump-forward) and a prefill
batch in one extend pass, under the token budget `mixed_step_tokens`: the prefill part gets what
the decodes leave, but at least a quarter of the budget (so a decode batch as wide as the budget
cannot starve the queue), and the prompt that crosses it is chunked as chunked prefill does. Each
step that has both kinds of work is such a step, so the gap between two tokens of a stream is one
bounded step, however many prompts arrive.

The token budget bounds the step's work, not its time, and the same tokens cost several times
more beside 64 wide decodes on a slow CPU than beside 4 on a fast one. With `mixed_step_ms` set
(the default), the prefill part is also held to what fits in that time beside the running
decodes, as `StepCostModel` predicts from the decode and mixed steps seen so far (but never below
`MIN_TIMED_PREFILL` tokens, so the queue keeps moving when the decodes alone take longer).

A mixed step, as the scheduler runs it:

1. `PrefillManager.build` admits the prefill part with the decodes' pending tokens reserved, so
   admission never takes the slots they need now;
2. decode memory as a decode step has it: `DecodeManager.ensure_memory` (retraction, when a
   continuing chunk took slots after all), then a slot per pending token, written into each
   decode's req-table row, uncounted until its pass succeeds;
3. one extend pass over [decodes..., prefill batch...] through the scheduler's `_forward_each`:
   if the batched pass fails, every request runs alone, so one request's failure costs nobody
   else (a decode that fails alone frees its new slots and ends with an internal error; a prefill
   request that fails alone is handled as in a prefill step);
4. the decodes that stepped and the completed prompts sample in one batch; the prefill side
   settles as a prefill step does (`prefill_step.settle_prefill`); finished decodes end.

What each request computes is unchanged: its new tokens over its own KV, whichever requests share
the pass (float32 greedy outputs are tested token-identical to separate steps).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from radixgen.runtime.config import EngineConfig
from radixgen.runtime.request import Req
from radixgen.runtime.scheduler.prefill import PrefillBatch
from radixgen.runtime.scheduler.prefill_step import extend_pass, settle_prefill
from radixgen.runtime.scheduler.step_cost import StepCostModel

if TYPE_CHECKING:
    from radixgen.runtime.scheduler.loop import Scheduler

MIN_PREFILL_SHARE = 4  # the prefill part of a mixed step gets >= budget // 4 tokens
MIN_TIMED_PREFILL = 32  # ... and >= this many when its time, not its budget, limits it


def prefill_share(step_tokens: int, decode_tokens: int) -> int:
    """Prefill tokens a mixed step may carry next to `decode_tokens` decode tokens."""
    return max(step_tokens - decode_tokens, step_tokens // MIN_PREFILL_SHARE, 1)


class MixedSteps:
    """Runs the scheduler's mixed steps. `enabled` may change between steps."""

    def __init__(self, scheduler: Scheduler, config: EngineConfig):
        self.scheduler = scheduler
        self.enabled = config.enable_mixed_chunk
        self.step_tokens = config.mixed_step_tokens
        self.step_seconds = config.mixed_step_ms / 1000 if config.mixed_step_ms else None
        self.cost = StepCostModel()
        scheduler.counters.update(
            mixed_steps=0, mixed_prefill_tokens=0, mixed_decode_tokens=0, mixed_seconds=0.0
        )

    def prefill_limits(self) -> tuple[int, int] | None:
        """(step_tokens, reserve) for `PrefillManager.build` when the next step, should it
        prefill, is mixed: requests are decoding, prompts wait and mixing is on. None
        otherwise."""
        s = self.scheduler
        running = s.decode.running
        if not self.enabled or not running or (not s.waiting and s.chunked is None):
            return None
        decode_tokens = sum(r.pending_len for r in running)
        share = prefill_share(self.step_tokens, decode_tokens)
        if self.step_seconds is not None:
            context = sum(r.kv_len for r in running)
            timed = self.cost.prefill_tokens_within(self.step_seconds, decode_tokens, context)
            if timed is not None:
                share = min(share, max(timed, MIN_TIMED_PREFILL))
        return share, decode_tokens

    def observe_decode(self, decode_tokens: int, context: int, seconds: float) -> None:
        """A decode step extending by `decode_tokens` over `context` KV tokens took `seconds`
        (the cost model learns a mixed step's decode part from these too)."""
        if self.step_seconds is not None:
            self.cost.observe(decode_tokens, context, 0, seconds)

    def run(self, batch: PrefillBatch) -> None:
        """One pass for every running request's pending tokens and `batch`."""
        s = self.scheduler
        started = time.perf_counter()
        decoding, new_slots = self._decode_memory()
        context = sum(r.kv_len for r in decoding)
        reqs = decoding + batch.reqs
        lens = [r.pending_len for r in decoding] + batch.extend_lens
        results = s._forward_each(reqs, extend_pass(s, reqs, lens))
        stepped: list[tuple[Req, torch.Tensor]] = []
        for req, result in zip(decoding, results[: len(decoding)], strict=True):
            if result is None:  # failed even alone: its new slots hold nothing
                s.cache.allocator.free(new_slots[id(req)])
                continue
            logits, rows = result
            req.kv_len += len(new_slots[id(req)])
            stepped.append((req, logits[rows.sample_row]))
        if settle_prefill(s, batch, results[len(decoding) :], stepped):
            s.emit_and_retire(decoding)
        seconds = time.perf_counter() - started
        prefill_tokens = sum(batch.extend_lens)
        decode_tokens = sum(lens) - prefill_tokens
        counters = s.counters
        counters["mixed_steps"] += 1
        counters["mixed_prefill_tokens"] += prefill_tokens
        counters["mixed_decode_tokens"] += decode_tokens
        counters["mixed_seconds"] += seconds
        if self.step_seconds is not None:
            self.cost.observe(decode_tokens, context, prefill_tokens, seconds)

    def _decode_memory(self) -> tuple[list[Req], dict[int, torch.Tensor]]:
        """A slot per pending token of every running request (retracting as a decode step
        does), written into its row past its KV; the requests and their new slots."""
        s = self.scheduler
        retracted = s.decode.ensure_memory()
        s.waiting[:0] = reversed(retracted)
        reqs = list(s.decode.running)
        pending = [r.pending_len for r in reqs]
        slots = s.cache.alloc_slots(sum(pending))
        if slots is None:
            s._abort_exhausted(reqs)
            return [], {}
        new_slots = {}
        for req, part in zip(reqs, slots.split(pending), strict=True):
            s.runner.req_table.write(req.req_pool_row, req.kv_len, part)
            new_slots[id(req)] = part
        return reqs, new_slots
