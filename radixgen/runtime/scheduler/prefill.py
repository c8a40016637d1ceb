"""PrefillManager: admission of waiting requests into a prefill batch, within budgets.

Budgets for one batch:
- tokens: free + evictable KV, minus what running requests are expected to still decode
  (`remaining max_new_tokens * new_token_ratio`, clipped) -- admitting more would only force
  retractions later;
- input: `max_prefill_tokens` new tokens per batch;
- chunk: a prompt longer than `chunked_prefill_size` is prefilled a chunk per step; the chunked
  request continues first on the next step;
- mixed step (`step_tokens`, see mixed.py): when the batch shares its forward pass with the
  running decodes, at most `step_tokens` prefill tokens, the last prompt chunked to fit (even
  with chunking off), and the decodes' own new tokens (`reserve`) are kept free of admission.

In-batch prefix sharing: a request whose whole prompt is admitted publishes it to the radix tree
at once (`CacheManager.publish`), before the forward pass computes its KV, so requests admitted
after it into the same batch reuse its prompt like any cached prefix: a burst of few-shot
questions or `n > 1` samples computes the shared prompt once, in the batch that computes it for
the first. In a pass, every layer writes the new K/V before attending, so the followers read
their prefix as soon as it exists. A prompt admitted only in part (chunked) ends the batch, so
nothing follows it there; its chunks reach the tree after each pass. Requests whose uncached
text merely starts alike after *different* cached prefixes (the same question asked of two
articles) share nothing and go in together; with the cache disabled nothing is published.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from radixgen.runtime.config import EngineConfig
from radixgen.runtime.request import Req
from radixgen.runtime.scheduler.cache_manager import CacheManager

CLIP_MAX_NEW_TOKENS = 4096


@dataclass
class PrefillBatch:
    reqs: list[Req] = field(default_factory=list)
    extend_lens: list[int] = field(default_factory=list)
    chunked: Req | None = None  # the request whose prompt is not complete after this batch


def expected_decode_tokens(req: Req, new_token_ratio: float) -> int:
    return int(min(req.max_new_remaining, CLIP_MAX_NEW_TOKENS) * new_token_ratio)


class PrefillManager:
    def __init__(self, config: EngineConfig, cache: CacheManager):
        self.cache = cache
        self.max_prefill_tokens = config.max_prefill_tokens
        self.chunk_size = config.chunked_prefill_size
        self.max_running = config.max_running_requests

    def build(
        self,
        ordered_waiting: list[Req],
        running: list[Req],
        chunked: Req | None,
        new_token_ratio: float,
        step_tokens: int | None = None,
        reserve: int = 0,
    ) -> PrefillBatch | None:
        """Admit requests in the given order until a budget runs out. Admitted requests hold a
        row, a locked prefix and slots for their extend tokens; the caller removes them from
        the waiting queue (all of `batch.reqs` except a continuing `chunked`).

        `step_tokens` caps the batch's tokens and chunks the prompt that crosses it; `reserve`
        slots stay free for work outside the batch that needs them in the same step."""
        batch = PrefillBatch()
        reserved = reserve + sum(expected_decode_tokens(r, new_token_ratio) for r in running)
        rem_input = self.max_prefill_tokens
        rem_chunk = self.chunk_size if self.chunk_size > 0 else None
        if step_tokens is not None:
            rem_input = min(rem_input, step_tokens)
            rem_chunk = step_tokens if rem_chunk is None else min(rem_chunk, step_tokens)
        if chunked is not None:
            size = chunked.pending_len if rem_chunk is None else min(chunked.pending_len, rem_chunk)
            if not self._add(batch, chunked, size):
                return None
            rem_input -= size
            if rem_chunk is not None:
                rem_chunk -= size
            if chunked.pending_len > size:
                batch.chunked = chunked
                return batch
        for req in ordered_waiting:
            if len(running) + len(batch.reqs) >= self.max_running or rem_input <= 0:
                break
            if rem_chunk is not None and rem_chunk <= 0:
                break
            prefix, node = self.cache.match(req)
            cached = int(prefix.shape[0])
            extend = req.seq_len - cached
            need = extend + expected_decode_tokens(req, new_token_ratio)
            alone = not running and not batch.reqs  # validated to fit the pool by itself
            # Its own prefix stops being evictable once `begin` locks it: not room for it.
            room = self.cache.available_tokens - self.cache.tree.unlocked_len(node)
            if need > room - reserved and not alone:
                break
            size = extend
            if rem_chunk is not None and extend > rem_chunk:
                size = rem_chunk
            elif extend > rem_input and batch.reqs:
                break
            if not self.cache.begin(req, prefix, node):
                break
            if not req.retractions:  # report the prompt's first match, not a re-admission's
                req.cached_tokens = min(cached, len(req.origin_input_ids))
            if not self._add(batch, req, size):
                self.cache.release(req)
                break
            self.cache.tree.record_hit(node)  # admitted: it reuses the path root..node
            reserved += expected_decode_tokens(req, new_token_ratio)
            rem_input -= size
            if rem_chunk is not None:
                rem_chunk -= size
            if size < extend:
                batch.chunked = req
                break
            self.cache.publish(req, size)  # batch-mates admitted next reuse the whole prompt
        return batch if batch.reqs else None

    def _add(self, batch: PrefillBatch, req: Req, size: int) -> bool:
        if self.cache.extend(req, size) is None:
            return False
        batch.reqs.append(req)
        batch.extend_lens.append(size)
        return True
