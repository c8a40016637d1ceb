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
   settles as a prefill step does (`Scheduler._settle_prefill`); finished decodes end.

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

if TYPE_CHECKING:
    from radixgen.runtime.scheduler.loop import Scheduler

MIN_PREFILL_SHARE = 4  # the prefill part of a mixed step gets >= budget // 4 tokens


def prefill_share(step_tokens: int, decode_tokens: int) -> int:
    """Prefill tokens a mixed step may carry next to `decode_tokens` decode tokens."""
    return max(step_tokens - decode_tokens, step_tokens // MIN_PREFILL_SHARE, 1)


class MixedSteps:
    """Runs the scheduler's mixed steps. `enabled` may change between steps."""

    def __init__(self, scheduler: Scheduler, config: EngineConfig):
        self.scheduler = scheduler
        self.enabled = config.enable_mixed_chunk
        self.step_tokens = config.mixed_step_tokens
        scheduler.counters.update(
            mixed_steps=0, mixed_prefill_tokens=0, mixed_decode_tokens=0, mixed_seconds=0.0
        )

    def prefill_limits(self) -> tuple[int, int] | None:
        """(step_tokens, reserve) for `PrefillManager.build` when the next step, should it
        prefill, is mixed: requests are decoding and mixing is on. None otherwise."""
        running = self.scheduler.decode.running
        if not self.enabled or not running:
            return None
        decode_tokens = sum(r.pending_len for r in running)
        return prefill_share(self.step_tokens, decode_tokens), decode_tokens

    def run(self, batch: PrefillBatch) -> None:
        """One pass for every running request's pending tokens and `batch`."""
        s = self.scheduler
        started = time.perf_counter()
        decoding, new_slots = self._decode_memory()
        reqs = decoding + batch.reqs
        lens = [r.pending_len for r in decoding] + batch.extend_lens
        results = s._forward_each(reqs, s._extend_pass(reqs, lens))
        stepped: list[tuple[Req, torch.Tensor]] = []
        for req, result in zip(decoding, results[: len(decoding)], strict=True):
            if result is None:  # failed even alone: its new slots hold nothing
                s.cache.allocator.free(new_slots[id(req)])
                continue
            logits, rows = result
            req.kv_len += len(new_slots[id(req)])
            stepped.append((req, logits[rows.sample_row]))
        if s._settle_prefill(batch, results[len(decoding) :], stepped):
            s.emit_and_retire(decoding)
        counters = s.counters
        counters["mixed_steps"] += 1
        counters["mixed_prefill_tokens"] += sum(batch.extend_lens)
        counters["mixed_decode_tokens"] += sum(lens) - sum(batch.extend_lens)
        counters["mixed_seconds"] += time.perf_counter() - started

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
