"""Turn admitted requests into the `ForwardBatch` the model runner takes.

For an extend batch it also returns where each request's logits land in the result, so the
scheduler can pick its sampling row and its prompt-logprob rows without index arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from radixgen.runtime.cache.req_table import ReqToTokenTable
from radixgen.runtime.model.batch import ForwardBatch, ForwardMode, ImageSpan
from radixgen.runtime.request import Req


@dataclass(frozen=True)
class ExtendRows:
    """Where one request's logits are in the extend result (`logits[R, V]`)."""

    input_logprob_rows: range  # rows predicting prompt tokens `targets`
    input_logprob_targets: list[int]
    sample_row: int | None  # row of the last token, when the prompt is complete


def input_logprob_start(req: Req) -> int:
    """The prompt position of the first input logprob entry (which is None)."""
    return max(0, min(req.logprob.logprob_start_len, len(req.origin_input_ids) - 1))


def build_extend(
    reqs: list[Req], extend_lens: list[int], req_table: ReqToTokenTable
) -> tuple[ForwardBatch, list[ExtendRows]]:
    ids: list[int] = []
    positions: list[int] = []
    logit_rows: list[int] = []
    layout: list[ExtendRows] = []
    images: list[ImageSpan] = []
    for req, n in zip(reqs, extend_lens, strict=True):
        base, start = len(ids), req.kv_len
        ids.extend(req.fill_ids[start : start + n])
        images.extend(_image_spans(req, start, n, base))
        positions.extend(range(start, start + n))
        rows_begin = len(logit_rows)
        targets: list[int] = []
        if req.wants_input_logprobs and not _input_logprobs_done(req):
            prompt = req.origin_input_ids
            first = max(input_logprob_start(req), start)
            last = min(start + n, len(prompt) - 1)  # positions [first, last) predict p + 1
            logit_rows.extend(base + p - start for p in range(first, last))
            targets = prompt[first + 1 : last + 1]
        sample_row = None
        if start + n == req.seq_len:
            sample_row = len(logit_rows)
            logit_rows.append(base + n - 1)
        layout.append(ExtendRows(range(rows_begin, rows_begin + len(targets)), targets, sample_row))
    rows = torch.tensor([r.req_pool_row for r in reqs], dtype=torch.int64)
    starts = [r.kv_len for r in reqs]
    batch = ForwardBatch(
        mode=ForwardMode.EXTEND,
        input_ids=torch.tensor(ids, dtype=torch.int64),
        positions=torch.tensor(positions, dtype=torch.int64),
        out_cache_loc=torch.cat(
            [
                req_table.read(r.req_pool_row, s + n, s)
                for r, s, n in zip(reqs, starts, extend_lens, strict=True)
            ]
        ),
        req_pool_indices=rows,
        seq_lens=torch.tensor([s + n for s, n in zip(starts, extend_lens, strict=True)]),
        extend_lens=torch.tensor(extend_lens, dtype=torch.int64),
        logit_rows=torch.tensor(logit_rows, dtype=torch.int64),
        images=tuple(images),
    )
    return batch, layout


def _image_spans(req: Req, start: int, n: int, base: int) -> list[ImageSpan]:
    """The parts of `req`'s images among its positions [start, start + n), which sit at flat
    rows from `base` (a chunk boundary or a cached prefix may cut an image)."""
    spans = []
    for item in req.images:
        lo, hi = max(start, item.offset), min(start + n, item.end)
        if lo < hi:
            spans.append(
                ImageSpan(item.image, base + lo - start, lo - item.offset, hi - item.offset)
            )
    return spans


def _input_logprobs_done(req: Req) -> bool:
    expected = len(req.origin_input_ids) - input_logprob_start(req)
    return len(req.input_token_logprobs) >= expected


def build_decode(reqs: list[Req], slots: torch.Tensor, req_table: ReqToTokenTable) -> ForwardBatch:
    """One token per request: its last sampled token, written to `slots` ([B])."""
    for req, slot in zip(reqs, slots.tolist(), strict=True):
        req_table.table[req.req_pool_row, req.kv_len] = slot
    kv_lens = torch.tensor([r.kv_len for r in reqs], dtype=torch.int64)
    return ForwardBatch(
        mode=ForwardMode.DECODE,
        input_ids=torch.tensor([r.output_ids[-1] for r in reqs], dtype=torch.int64),
        positions=kv_lens,
        out_cache_loc=slots,
        req_pool_indices=torch.tensor([r.req_pool_row for r in reqs], dtype=torch.int64),
        seq_lens=kv_lens + 1,
        extend_lens=torch.ones(len(reqs), dtype=torch.int64),
        logit_rows=torch.arange(len(reqs)),
    )
