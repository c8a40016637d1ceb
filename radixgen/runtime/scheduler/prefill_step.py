"""The prefill side of a step: one extend pass over a prefill batch's new tokens, and what
follows it (KV advanced, prompt logprobs, the completed prompts sampled, prompts shared through
the tree, requests moved to decoding or finished). A prefill step runs it alone (`run_prefill`);
a mixed step (mixed.py) runs the same pass with the running decodes in it and settles its prefill
part here too (`settle_prefill`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from radixgen.runtime.request import FinishKind, FinishReason, Req
from radixgen.runtime.scheduler.batch_builder import ExtendRows, build_extend, input_logprob_start
from radixgen.runtime.scheduler.prefill import PrefillBatch

if TYPE_CHECKING:
    from radixgen.runtime.scheduler.loop import Scheduler


def run_prefill(s: Scheduler, batch: PrefillBatch) -> None:
    """A prefill step: one extend pass over `batch` (each request alone if it fails), then
    `settle_prefill`."""
    started = time.perf_counter()
    results = s._forward_each(batch.reqs, extend_pass(s, batch.reqs, batch.extend_lens))
    settle_prefill(s, batch, results)
    s.counters["prefill_batches"] += 1
    s.counters["prefill_tokens"] += sum(batch.extend_lens)
    s.counters["prefill_seconds"] += time.perf_counter() - started


def extend_pass(
    s: Scheduler, reqs: list[Req], extend_lens: list[int]
) -> Callable[[list[Req]], list[tuple[torch.Tensor, ExtendRows]]]:
    """`forward(some)` for `Scheduler._forward_each`: one extend pass over `some` of `reqs`,
    each by its own extend length; (logits [R, V], the request's rows) per request."""
    extend_len = {id(r): n for r, n in zip(reqs, extend_lens, strict=True)}

    def forward(some: list[Req]) -> list[tuple[torch.Tensor, ExtendRows]]:
        lens = [extend_len[id(r)] for r in some]
        forward_batch, layout = build_extend(some, lens, s.runner.req_table)
        logits = s.runner.forward(forward_batch)  # [R, V]
        return [(logits, rows) for rows in layout]

    return forward


def settle_prefill(
    s: Scheduler,
    batch: PrefillBatch,
    results: list[tuple[torch.Tensor, ExtendRows] | None],
    also_sample: list[tuple[Req, torch.Tensor]] | None = None,
) -> bool:
    """A prefill batch after its pass (`Scheduler._forward_each`'s results): advance the KV,
    sample the completed prompts (in one batch with `also_sample`: (request, logits row) pairs
    a mixed step's decodes bring), share prompts through the tree, move completed requests to
    decoding, emit and finish. False when a failed pass forced an engine reset."""
    to_sample = [req for req, _ in also_sample or ()]
    sample_rows = [row for _, row in also_sample or ()]
    for req, n, result in zip(batch.reqs, batch.extend_lens, results, strict=True):
        if result is None:  # its forward pass failed even alone
            if req is not batch.chunked and not s.cache.disabled:
                # Its prompt was published before the pass: the tree now holds slots
                # without KV that batch-mates may have matched. Only a reset is safe.
                s._reset_after_fault()
                return False
            s.cache.drop_uncomputed(req, n)
            continue
        logits, rows = result
        req.kv_len += n
        try:
            _record_prefill(s, req, logits, rows)
        except Exception as exc:
            s._fail(req, exc)
            continue
        if rows.sample_row is None or req.is_finished:
            continue
        to_sample.append(req)
        sample_rows.append(logits[rows.sample_row])
    if to_sample:
        s._sample_and_append(to_sample, torch.stack(sample_rows))
    # Share every still-running prompt (or prompt chunk) through the tree right away, so
    # requests waiting behind it reuse it instead of computing it again.
    for req in batch.reqs:
        if not req.is_finished:
            s.cache.cache_unfinished(req)
    done = [r for r in batch.reqs if r is not s.chunked]
    s.decode.add([r for r in done if not r.is_finished])
    s._emit(batch.reqs)
    for req in done:
        if req.is_finished:
            s._finish(req)
    if s.chunked is not None and s.chunked.is_finished:
        chunked, s.chunked = s.chunked, None
        s._finish(chunked)
    return True


def _record_prefill(s: Scheduler, req: Req, logits: torch.Tensor, rows: ExtendRows) -> None:
    """A prefilled request's own bookkeeping: prompt logprobs, counters, max_new_tokens 0."""
    if req.wants_input_logprobs and (rows.input_logprob_rows or not req.input_token_logprobs):
        first_id = req.origin_input_ids[input_logprob_start(req)]
        picked = logits[rows.input_logprob_rows.start : rows.input_logprob_rows.stop]
        s.outputs.record_input_logprobs(req, picked, rows.input_logprob_targets, first_id)
    if req.retractions == 0 and req.kv_len >= len(req.origin_input_ids):
        s.counters["prompt_tokens"] += len(req.origin_input_ids)
        s.counters["cached_tokens"] += req.cached_tokens
    if rows.sample_row is not None and req.sampling_params.max_new_tokens == 0:
        req.finish(FinishReason(FinishKind.LENGTH, length=0))
