"""The verify step of n-gram speculative decoding (speculative.py): a decode step in which some
request drafted, run by the scheduler (`Scheduler._run_decode`) as one extend pass over every
running request's pending tokens and its draft."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from radixgen.runtime.request import Req
from radixgen.runtime.scheduler.speculative import build_verify

if TYPE_CHECKING:
    from radixgen.runtime.scheduler.loop import Scheduler


def run_verify(s: Scheduler, reqs: list[Req], drafts: list[list[int]], started: float) -> None:
    """A decode step that verifies n-gram drafts (speculative.py) in its one pass: every
    request extends by its pending tokens and its draft ([] for most, or for those that do
    not speculate); drafters append their accepted drafts plus one token, the others
    sample as usual. Drafts fit in free slots (`propose`), so the allocation cannot fail."""
    spec, table = s.speculator, s.runner.req_table
    lens = [r.pending_len + len(d) for r, d in zip(reqs, drafts, strict=True)]
    draft_of = {id(r): d for r, d in zip(reqs, drafts, strict=True)}
    for req, part in zip(reqs, s.cache.alloc_slots(sum(lens)).split(lens), strict=True):
        table.write(req.req_pool_row, req.kv_len, part)

    def forward(batch_reqs: list[Req]) -> list[torch.Tensor]:
        batch, layout = build_verify(batch_reqs, [draft_of[id(r)] for r in batch_reqs], table)
        logits = s.runner.forward(batch)  # [R, V]
        return [logits[rows.rows.start : rows.rows.stop] for rows in layout]

    plain: list[Req] = []
    plain_rows: list[torch.Tensor] = []
    for req, logits in zip(reqs, s._forward_each(reqs, forward), strict=True):
        draft = draft_of[id(req)]
        if logits is None:  # failed even alone: its new slots hold nothing
            s.cache.drop_uncomputed(req, req.pending_len + len(draft))
        elif not draft:
            req.kv_len += req.pending_len
            plain.append(req)
            plain_rows.append(logits[-1])
        else:
            accepted = req.spec.accepted_tokens
            try:
                appended = spec.verify(req, logits, draft, s.outputs, s.cache)
                s.counters["generated_tokens"] += appended
            except Exception as exc:
                s._fail(req, exc)
            s.counters["spec_draft_tokens"] += len(draft)
            s.counters["spec_accepted_tokens"] += req.spec.accepted_tokens - accepted
    if plain:
        s._sample_and_append(plain, torch.stack(plain_rows))
    s.emit_and_retire(reqs)
    s.counters["spec_verify_steps"] += 1
    s.counters["decode_steps"] += 1
    s.counters["decode_seconds"] += time.perf_counter() - started
