"""After a forward pass: record logprobs, append sampled tokens (advancing constrained requests'
grammars, and jumping over the text a grammar forces), decide who finished, and build the output
records (SGLang's `text` / `output_ids` / `meta_info` shape)."""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import torch

from radixgen.runtime.request import FinishKind, FinishReason, Req
from radixgen.runtime.sampler import top_logprobs
from radixgen.runtime.stop_regex import StopRegexTimeout


def grammar_error(message: str) -> FinishReason:
    """A constrained request ended by its grammar mid-generation: the caller's constraint
    admits no continuation the model can take (a 400, not an engine fault)."""
    return FinishReason(FinishKind.ABORT, message=f"grammar error: {message}", status_code=400)


class OutputProcessor:
    def __init__(self, tokenizer, eos_ids: frozenset[int]):
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.token_text = lru_cache(maxsize=65536)(self._decode_one)

    def _decode_one(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    # --- recording -------------------------------------------------------------------------

    def record_input_logprobs(
        self, req: Req, logits: torch.Tensor, targets: list[int], first_id: int
    ) -> None:
        """logits [N, V] predicting `targets` ([N] prompt tokens)."""
        if not req.input_token_logprobs:
            req.input_token_logprobs.append((None, first_id))
            req.input_top_logprobs.append(None)
        if not targets:
            return
        logprobs = torch.log_softmax(logits, dim=-1)  # [N, V]
        chosen = logprobs.gather(1, torch.tensor(targets)[:, None])[:, 0].tolist()
        req.input_token_logprobs.extend(zip(chosen, targets, strict=True))
        k = req.logprob.top_logprobs_num
        if k > 0:
            req.input_top_logprobs.extend(top_logprobs(logprobs, k))

    def append_token(self, req: Req, token: int, logprob: float | None, top: list | None) -> None:
        if req.grammar is not None and not self._advance_grammar(req, token):
            return
        req.output_ids.append(token)
        if req.first_token_at is None:
            req.first_token_at = time.perf_counter()
        if req.logprob.return_logprob:
            req.output_token_logprobs.append((logprob, token))
            if req.logprob.top_logprobs_num > 0:
                req.output_top_logprobs.append(top[: req.logprob.top_logprobs_num])
        self._check_finished(req, token)

    def jump_forward(self, req: Req) -> int:
        """Append the tokens `req`'s grammar forces from here (capped by `max_new_tokens`);
        the next forward pass computes their KV together. Returns how many were appended."""
        forced = req.grammar.forced_tokens()[: req.max_new_remaining]
        appended = 0
        for token in forced:
            if req.is_finished:
                break
            self.append_token(req, token, None, None)
            appended += 1
        req.forced_tokens += appended
        return appended

    def _advance_grammar(self, req: Req, token: int) -> bool:
        """Feed `token` to the grammar; False (request finished) when it must not be appended."""
        grammar = req.grammar
        if grammar.error is not None:  # failed while computing this step's mask
            req.finish(grammar_error(grammar.error))
            return False
        if token in self.eos_ids and grammar.is_accepting:
            return True  # EOS ends a complete match; the stop check below handles it
        if not grammar.accept(token):
            message = grammar.error or f"token {token} is not allowed by the grammar"
            req.finish(grammar_error(message))
            return False
        if grammar.is_finished:
            req.finish(FinishReason(FinishKind.STOP))  # the output is a complete match
        return True

    def _check_finished(self, req: Req, token: int) -> None:
        p = req.sampling_params
        by_token = (not p.ignore_eos and token in self.eos_ids) or token in p.stop_token_ids
        if len(req.output_ids) >= p.max_new_tokens:
            req.finish(FinishReason(FinishKind.LENGTH, length=p.max_new_tokens))
        elif by_token:
            req.finish(FinishReason(FinishKind.STOP, matched=token))
        matched_token = by_token and req.finish_reason.kind is FinishKind.STOP
        rendered = req.output_ids[:-1] if matched_token else req.output_ids
        try:
            stop = req.detokenizer.update(rendered, final=req.is_finished)
        except StopRegexTimeout as exc:  # the caller's pattern is too slow on this text
            req.finish_reason = FinishReason(FinishKind.ABORT, message=str(exc), status_code=400)
            return
        if stop is not None and not (req.is_finished and req.finish_reason.kind is FinishKind.STOP):
            req.finish_reason = FinishReason(FinishKind.STOP, matched=stop)

    # --- output records --------------------------------------------------------------------

    def make_output(self, req: Req) -> dict[str, Any]:
        finished = req.is_finished
        meta: dict[str, Any] = {
            "id": req.label,
            "finish_reason": req.finish_reason.to_json() if finished else None,
            "prompt_tokens": len(req.origin_input_ids),
            "completion_tokens": len(req.output_ids),
            "cached_tokens": req.cached_tokens,
        }
        if finished:
            meta["e2e_latency"] = time.perf_counter() - req.created_at
        if req.spec is not None:
            meta.update(req.spec.meta_info())
        if req.logprob.return_logprob:
            with_text = req.logprob.return_text_in_logprobs
            meta["input_token_logprobs"] = self._triples(req.input_token_logprobs, with_text)
            meta["output_token_logprobs"] = self._triples(req.output_token_logprobs, with_text)
            if req.logprob.top_logprobs_num > 0:
                meta["input_top_logprobs"] = [
                    None if top is None else self._triples(top, with_text)
                    for top in req.input_top_logprobs
                ]
                meta["output_top_logprobs"] = [
                    self._triples(top, with_text) for top in req.output_top_logprobs
                ]
        return {
            "text": req.detokenizer.visible_text(finished),
            "output_ids": list(req.output_ids),
            "meta_info": meta,
        }

    def _triples(self, pairs, with_text: bool) -> list[list]:
        return [[lp, tid, self.token_text(tid) if with_text else None] for lp, tid in pairs]
