"""DecodeManager: the running set, its memory check and retraction.

Before every decode step each running request needs a new KV slot per pending token (one, or
more after a jump-forward). If free + evictable slots
do not suffice, requests are *retracted*: their KV goes to the radix tree (evictable), their row
is freed and they return to the front of the waiting queue keeping their generated tokens; they
are re-prefilled later, normally hitting their own cached KV. The victims are the requests that
generated least (and, among those, have the longest prompts), as in SGLang.

`new_token_ratio` estimates how much of their remaining `max_new_tokens` running requests will
really generate; admission reserves that much. It decays while decoding goes well and is raised
after a retraction.
"""

from __future__ import annotations

from radixgen.runtime.request import Req
from radixgen.runtime.scheduler.cache_manager import CacheManager

INIT_NEW_TOKEN_RATIO = 0.7
MIN_NEW_TOKEN_RATIO = 0.1
NEW_TOKEN_RATIO_DECAY = 0.001
RETRACT_DECODE_STEPS = 20


class DecodeManager:
    def __init__(self, cache: CacheManager):
        self.cache = cache
        self.running: list[Req] = []
        self.new_token_ratio = INIT_NEW_TOKEN_RATIO
        self.total_retractions = 0

    def add(self, reqs: list[Req]) -> None:
        self.running.extend(reqs)

    def remove_finished(self) -> list[Req]:
        done = [r for r in self.running if r.is_finished]
        if done:
            self.running = [r for r in self.running if not r.is_finished]
        return done

    def ensure_memory(self) -> list[Req]:
        """Make room for every running request's pending tokens; returns the retracted requests
        (already released), most recently retracted last."""
        retracted: list[Req] = []
        while self.running and self.cache.available_tokens < sum(
            r.pending_len for r in self.running
        ):
            if len(self.running) == 1:
                break  # alone it cannot fit: the scheduler aborts it
            self.running.sort(key=lambda r: (len(r.output_ids), -len(r.origin_input_ids)))
            victim = self.running.pop(0)
            self.cache.release(victim)
            victim.retractions += 1
            retracted.append(victim)
        if retracted:
            self.total_retractions += len(retracted)
            decoded = sum(len(r.output_ids) for r in self.running)
            budget = sum(r.sampling_params.max_new_tokens for r in self.running) or 1
            ratio = (decoded + RETRACT_DECODE_STEPS * len(self.running)) / budget
            self.new_token_ratio = min(1.0, ratio)
        else:
            self.new_token_ratio = max(
                MIN_NEW_TOKEN_RATIO, self.new_token_ratio - NEW_TOKEN_RATIO_DECAY
            )
        return retracted
