"""Batched sampling and logprobs.

Order of operations (as in SGLang): logit bias and penalties on the raw logits, `min_new_tokens`
masking of stop tokens, grammar masks of constrained requests, temperature, softmax, then top-k /
top-p / min-p filtering and a draw.

Draws use inverse-CDF sampling with one uniform number per request from that request's own
`random.Random` (seeded by `sampling_seed` or by the engine), so a request's samples do not
depend on which other requests share its batch: the same seed gives the same output.

Logprobs are reported from the model's distribution (log-softmax of the raw logits), as the
OpenAI API does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from radixgen.runtime.constrained import TokenMasker
from radixgen.runtime.request import Req
from radixgen.runtime.sampling_params import SamplingParams


@dataclass
class SampleOutput:
    token_ids: list[int]
    logprobs: list[float] | None  # logprob of each sampled token, when any request asked
    top_logprobs: list[list[tuple[float, int]]] | None

    def pick(self, i: int) -> tuple[int, float | None, list[tuple[float, int]] | None]:
        """Row i's token, its logprob and its top logprobs (None where nobody asked)."""
        return (
            self.token_ids[i],
            None if self.logprobs is None else self.logprobs[i],
            None if self.top_logprobs is None else self.top_logprobs[i],
        )


def apply_penalties(logits: torch.Tensor, reqs: Sequence[Req]) -> None:
    """In place on logits [B, V]: frequency / presence penalties over generated tokens,
    repetition penalty over prompt and generated tokens, logit bias."""
    vocab = logits.shape[1]
    for i, req in enumerate(reqs):
        p = req.sampling_params
        if p.logit_bias:
            ids = torch.tensor([int(k) for k in p.logit_bias], dtype=torch.int64)
            logits[i].index_add_(0, ids, torch.tensor(list(p.logit_bias.values())))
        if not p.needs_penalties:
            continue
        if p.frequency_penalty or p.presence_penalty:
            counts = torch.bincount(
                torch.tensor(req.output_ids, dtype=torch.int64), minlength=vocab
            ).to(logits.dtype)  # [V]
            logits[i] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0)
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(sorted({t for t in req.fill_ids if t >= 0}), dtype=torch.int64)
            row = logits[i, seen]
            logits[i, seen] = torch.where(
                row > 0, row / p.repetition_penalty, row * p.repetition_penalty
            )


def mask_stop_tokens(logits: torch.Tensor, reqs: Sequence[Req], eos_ids: frozenset[int]):
    """Forbid EOS and stop tokens for requests below `min_new_tokens`."""
    for i, req in enumerate(reqs):
        p = req.sampling_params
        if len(req.output_ids) < p.min_new_tokens:
            banned = set(p.stop_token_ids) | (set() if p.ignore_eos else set(eos_ids))
            logits[i, list(banned)] = float("-inf")


def kept_count(sorted_probs: torch.Tensor, p: SamplingParams) -> int:
    """How many of the most likely tokens top-k / top-p / min-p keep (at least one), for one
    row of probabilities sorted in descending order ([V]). The one definition of the filter:
    sampling and speculative acceptance both use it."""
    keep = sorted_probs.shape[0] if p.top_k < 1 else min(p.top_k, sorted_probs.shape[0])
    if p.top_p < 1.0:
        cumulative = sorted_probs.cumsum(0)
        # keep tokens whose preceding mass is below top_p (always at least the first)
        keep = min(keep, int((cumulative - sorted_probs < p.top_p).sum()))
    if p.min_p > 0.0:
        keep = min(keep, int((sorted_probs >= p.min_p * sorted_probs[0]).sum()))
    return max(keep, 1)


def target_probs(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """The distribution a non-greedy request draws its next token from, for logits [R, V]
    already biased and masked: temperature, softmax, then the top-k / top-p / min-p filter with
    the kept mass renormalised ([R, V], zero outside the kept tokens)."""
    probs = torch.softmax(logits / p.temperature, dim=-1)  # [R, V]
    if not p.needs_sorting:
        return probs
    filtered = torch.zeros_like(probs)
    for i in range(probs.shape[0]):
        sorted_probs, order = probs[i].sort(descending=True)  # [V]
        keep = kept_count(sorted_probs, p)
        kept = sorted_probs[:keep]
        filtered[i, order[:keep]] = kept / kept.sum()
    return filtered


def _filtered_sample(probs: torch.Tensor, req: Req) -> int:
    """Top-k / top-p / min-p filter then an inverse-CDF draw, for one row probs [V]."""
    sorted_probs, order = probs.sort(descending=True)  # [V]
    kept = sorted_probs[: kept_count(sorted_probs, req.sampling_params)]
    cdf = kept.cumsum(0)
    u = req.sampling_rng.random() * float(cdf[-1])
    index = min(int(torch.searchsorted(cdf, torch.tensor([u], dtype=cdf.dtype))), len(kept) - 1)
    return int(order[index])


def _plain_sample(probs: torch.Tensor, req: Req) -> int:
    cdf = probs.cumsum(0)
    u = req.sampling_rng.random() * float(cdf[-1])
    index = min(int(torch.searchsorted(cdf, torch.tensor([u], dtype=cdf.dtype))), len(cdf) - 1)
    return index


def top_logprobs(logprobs: torch.Tensor, k: int) -> list[list[tuple[float, int]]]:
    """Per row of logprobs [R, V], the k best (logprob, token_id)."""
    values, ids = logprobs.topk(k, dim=-1)
    return [
        list(zip(v, i, strict=True)) for v, i in zip(values.tolist(), ids.tolist(), strict=True)
    ]


class Sampler:
    def __init__(self, eos_ids: frozenset[int], masker: TokenMasker | None = None):
        self.eos_ids = eos_ids
        self.masker = masker

    def sample(self, logits: torch.Tensor, reqs: Sequence[Req]) -> SampleOutput:
        """logits [B, V] float32 (one row per request) -> next tokens. Edits that would not
        survive a second application (penalties, logit bias) go to a copy, so a failed call
        can be repeated on the same logits; masks are idempotent and stay in place."""
        want_logprobs = any(r.logprob.return_logprob for r in reqs)
        raw_logprobs = torch.log_softmax(logits, dim=-1) if want_logprobs else None  # [B, V]
        if any(r.sampling_params.needs_penalties or r.sampling_params.logit_bias for r in reqs):
            logits = logits.clone()
            apply_penalties(logits, reqs)
        if any(len(r.output_ids) < r.sampling_params.min_new_tokens for r in reqs):
            mask_stop_tokens(logits, reqs, self.eos_ids)
        if self.masker is not None and any(r.grammar is not None for r in reqs):
            self.masker.apply(logits, [r.grammar for r in reqs])

        tokens = logits.argmax(dim=-1).tolist()  # greedy for everyone, replaced below
        sampled_rows = [i for i, r in enumerate(reqs) if not r.sampling_params.is_greedy]
        if sampled_rows:
            rows = torch.tensor(sampled_rows)
            temps = torch.tensor([reqs[i].sampling_params.temperature for i in sampled_rows])
            probs = torch.softmax(logits[rows] / temps[:, None], dim=-1)  # [S, V]
            for j, i in enumerate(sampled_rows):
                req = reqs[i]
                draw = _filtered_sample if req.sampling_params.needs_sorting else _plain_sample
                tokens[i] = draw(probs[j], req)

        if raw_logprobs is None:
            return SampleOutput(tokens, None, None)
        chosen = raw_logprobs.gather(1, torch.tensor(tokens)[:, None])[:, 0].tolist()
        k = max(r.logprob.top_logprobs_num for r in reqs)
        tops = top_logprobs(raw_logprobs, k) if k > 0 else None
        return SampleOutput(tokens, chosen, tops)
