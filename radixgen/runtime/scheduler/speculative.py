"""N-gram speculative decoding (prompt lookup): drafts from a request's own tokens, verified in
the decode step's one forward pass.

Drafting. For each decoding request, the longest suffix of its tokens (prompt + output), of
`min_n..max_n` tokens, that occurred earlier in those tokens is looked up, and the up-to-k
tokens that followed its most recent earlier occurrence are the draft. `NgramIndex` keeps,
per request, where every n-gram last ended, grown by the tokens appended since the last step,
so a step costs `max_n - min_n + 1` dictionary look-ups and as many inserts per new token.

Verification. The request extends by its pending token(s) and its draft in one extend pass
(requests without a draft extend by their pending tokens, in the same pass); logits come back
for the last pending position and every draft position (`build_verify`). `Speculator.accept`
turns them into the tokens to append:

- greedy: the longest draft prefix equal to the target's argmax chain, then the target's own
  token at the first mismatch (or after the last draft): exactly the tokens plain greedy decoding
  would produce, one forward pass for all of them;
- temperature > 0: the speculative sampling rule with a deterministic draft (q = one-hot(d)):
  accept d with probability p(d), where p is the request's processed target distribution
  (logit bias, `min_new_tokens` masking, temperature, top-k / top-p / min-p as the sampler applies
  them); on rejection draw from p with d removed and renormalised, and stop. Each appended token
  is then distributed as p given the tokens before it: the output distribution is unchanged.
  (The draws use the request's own RNG, so a seed still fixes the output, but a seeded sample
  with speculation differs from the same seed without it.)

KV. Positions whose KV the pass computed and whose tokens were appended stay (`kv_len` advances
by the pending tokens plus the accepted drafts, the last appended token always stays pending as
in plain decoding); the slots of rejected drafts, and of tokens dropped after a finish, are freed
at once. They were never in the radix tree and never enter it: the tree only ever receives
`fill_ids[:kv_len]`.

Finishing. Appended tokens go through the output processor one at a time (EOS, stop tokens, stop
strings and regexes, `max_new_tokens`); the first finish ends the run and the rest is dropped.

Length. A verify pass costs more per drafted token than it saves when drafts are mostly
rejected (prose the prompt does not contain). Each request keeps `acceptance`, a moving average
of whether its drafted tokens were accepted, and drafts the length k (up to the budget below)
that maximizes its expected tokens per cost, `(1 + a + ... + a^k) / (1 + c k)` with c =
`Tuning.speculative_draft_cost(dtype)`; k may be 0. A request that does not draft still looks
its draft up, and the token the step then produces tells whether the draft's first token would
have been accepted: the average keeps learning, and drafting resumes when the text turns to
copying.

Budget. A request drafts at most `EngineConfig.num_draft_tokens()`, and at most
`max_new_tokens - generated - 1` (the run then ends on the limit). A step's drafts fit in the
pool's *free* slots, so they never evict cached prefixes, and the step holds at most
`Tuning.speculative_max_step_tokens` tokens, shared evenly among the requests that speculate: a
verify pass costs more per extra token the wider the batch already is, and at batch 8 and up it
drafts nothing.

Eligibility (the rest decode as usual, in the same batch): requests with a grammar constraint
(their next tokens must pass the grammar; jump-forward already covers forced text), requests
asking for logprobs, and requests with frequency / presence / repetition penalties (their logits
depend on every earlier token, drafted or not). Logit bias and `min_new_tokens` are applied
exactly, per drafted position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from radixgen.runtime.cache.req_table import ReqToTokenTable
from radixgen.runtime.config import EngineConfig
from radixgen.runtime.model.batch import ForwardBatch, ForwardMode
from radixgen.runtime.request import Req
from radixgen.runtime.sampler import apply_penalties, target_probs


class NgramIndex:
    """Where each n-gram (`min_n <= n <= max_n`) of a growing token list last ended.

    Invariant: `ends[gram] = e` with `tokens[e - len(gram) : e] == gram`, `e` the largest such
    end below `len(tokens)`. The grams ending at `len(tokens)` are the suffixes being looked up,
    so they are indexed only once a token follows them: a look-up finds an *earlier* occurrence,
    and at least one token after it."""

    __slots__ = ("tokens", "ends", "min_n", "max_n", "_indexed")

    def __init__(self, tokens: Sequence[int], min_n: int, max_n: int):
        self.tokens: list[int] = list(tokens)
        self.ends: dict[tuple[int, ...], int] = {}
        self.min_n, self.max_n = min_n, max_n
        self._indexed = 0  # grams ending below this are in `ends`
        self._index()

    def extend(self, tokens: Sequence[int]) -> None:
        self.tokens.extend(tokens)
        self._index()

    def _index(self) -> None:
        tokens, ends, min_n, max_n = self.tokens, self.ends, self.min_n, self.max_n
        for end in range(max(self._indexed, min_n), len(tokens)):
            for n in range(min_n, min(max_n, end) + 1):
                ends[tuple(tokens[end - n : end])] = end
        self._indexed = len(tokens)

    def draft(self, k: int) -> list[int]:
        """Up to `k` tokens that followed the most recent earlier occurrence of the longest
        suffix found (of `max_n` down to `min_n` tokens); [] when none occurred before."""
        tokens, length = self.tokens, len(self.tokens)
        for n in range(min(self.max_n, length - 1), self.min_n - 1, -1):
            end = self.ends.get(tuple(tokens[length - n :]))
            if end is not None:
                return tokens[end : end + k]
        return []


INITIAL_ACCEPTANCE = 0.7  # a new request drafts a little (k = 2 at the default cost)
ACCEPTANCE_WEIGHT = 0.25  # weight of the newest outcome in the moving average


def draft_length(acceptance: float, limit: int, cost: float) -> int:
    """The k in 0..limit maximizing expected tokens per cost, (1 + a + ... + a^k) / (1 + cost k)
    (the first of equals); `limit` when cost <= 0."""
    if cost <= 0:
        return limit
    best, best_value, expected, term = 0, 1.0, 1.0, 1.0
    for k in range(1, limit + 1):
        term *= acceptance
        expected += term
        value = expected / (1 + cost * k)
        if value > best_value:
            best, best_value = k, value
    return best


@dataclass
class SpecState:
    """One request's drafting state and its speculation figures (its `meta_info`)."""

    index: NgramIndex
    seen_outputs: int  # output tokens already in `index`
    verify_ct: int = 0  # decode steps that verified a draft of this request
    draft_tokens: int = 0  # tokens drafted
    accepted_tokens: int = 0  # drafted tokens that became output
    acceptance: float = INITIAL_ACCEPTANCE  # moving average: was a drafted token accepted
    unverified: tuple[int, int] | None = None  # (output position, token) of a draft not run

    def learn(self, accepted: bool) -> None:
        self.acceptance += ACCEPTANCE_WEIGHT * (float(accepted) - self.acceptance)

    def meta_info(self) -> dict[str, int]:
        return {
            "spec_verify_ct": self.verify_ct,
            "spec_draft_tokens": self.draft_tokens,
            "spec_accepted_tokens": self.accepted_tokens,
        }


def speculates(req: Req) -> bool:
    """Whether `req` may draft (see the module doc for why the others do not)."""
    p = req.sampling_params
    return req.grammar is None and not req.logprob.return_logprob and not p.needs_penalties


@dataclass(frozen=True)
class VerifyRows:
    """Where one request's logits are in a verify pass's result: `rows` predict the token after
    its last pending token, then the token after each draft token."""

    rows: range


def build_verify(
    reqs: list[Req], drafts: list[list[int]], req_table: ReqToTokenTable
) -> tuple[ForwardBatch, list[VerifyRows]]:
    """An extend batch: each request's pending tokens then its draft, over KV slots already
    written to its req-table row (positions `kv_len ..`), with logits for the last pending
    position and every draft position."""
    ids: list[int] = []
    positions: list[int] = []
    logit_rows: list[int] = []
    layout: list[VerifyRows] = []
    lens: list[int] = []
    for req, draft in zip(reqs, drafts, strict=True):
        pending = req.pending_len
        own = req.output_ids[-pending:] if pending <= len(req.output_ids) else None
        tokens = (own if own is not None else req.fill_ids[req.kv_len :]) + draft
        base, start = len(ids), req.kv_len
        ids.extend(tokens)
        positions.extend(range(start, start + len(tokens)))
        first = len(logit_rows)
        logit_rows.extend(range(base + pending - 1, base + len(tokens)))
        layout.append(VerifyRows(range(first, len(logit_rows))))
        lens.append(len(tokens))
    starts = [r.kv_len for r in reqs]
    batch = ForwardBatch(
        mode=ForwardMode.EXTEND,
        input_ids=torch.tensor(ids, dtype=torch.int64),
        positions=torch.tensor(positions, dtype=torch.int64),
        out_cache_loc=torch.cat(
            [
                req_table.read(r.req_pool_row, s + n, s)
                for r, s, n in zip(reqs, starts, lens, strict=True)
            ]
        ),
        req_pool_indices=torch.tensor([r.req_pool_row for r in reqs], dtype=torch.int64),
        seq_lens=torch.tensor([s + n for s, n in zip(starts, lens, strict=True)]),
        extend_lens=torch.tensor(lens, dtype=torch.int64),
        logit_rows=torch.tensor(logit_rows, dtype=torch.int64),
    )
    return batch, layout


def draw(probs: torch.Tensor, rng: Any) -> int:
    """An inverse-CDF draw from the (unnormalised) distribution probs [V], over its support."""
    support = torch.nonzero(probs > 0)[:, 0]
    cdf = probs[support].cumsum(0)
    u = torch.tensor([rng.random() * float(cdf[-1])], dtype=cdf.dtype)
    index = min(int(torch.searchsorted(cdf, u, right=True)), len(support) - 1)
    return int(support[index])


class Speculator:
    """Drafts for a decode step (`propose`), and accepts drafts after its pass (`verify`)."""

    def __init__(self, config: EngineConfig, eos_ids: frozenset[int]):
        self.num_draft_tokens = config.num_draft_tokens()
        self.min_n = config.speculative_ngram_min_match_window_size
        self.max_n = config.speculative_ngram_max_match_window_size
        self.max_step_tokens = config.tuning.speculative_max_step_tokens
        self.draft_cost = config.tuning.speculative_draft_cost(config.torch_dtype)
        self.eos_ids = eos_ids

    # --- drafting --------------------------------------------------------------------------

    def propose(self, reqs: list[Req], free_slots: int) -> list[list[int]] | None:
        """One draft per request ([] for none), within `free_slots` beyond every request's
        pending tokens and within the step's token budget; None when nobody drafted (the step
        runs as plain decoding)."""
        pending = sum(r.pending_len for r in reqs)
        slots = free_slots - pending
        speculating = [speculates(r) for r in reqs]
        count = sum(speculating)
        if not count or slots <= 0 or pending >= self.max_step_tokens:
            return None
        share, extra = divmod(self.max_step_tokens - pending, count)
        drafts: list[list[int]] = []
        for req, speculates_ in zip(reqs, speculating, strict=True):
            draft: list[int] = []
            if speculates_:
                own_share = share + (extra > 0)
                extra -= 1
                limit = min(self.num_draft_tokens, req.max_new_remaining - 1, own_share, slots)
                draft = self._draft(req, limit) if limit > 0 else []
                slots -= len(draft)
            drafts.append(draft)
        return drafts if any(drafts) else None

    def _draft(self, req: Req, k: int) -> list[int]:
        state = req.spec
        if state is None:
            index = NgramIndex(req.fill_ids, self.min_n, self.max_n)
            state = req.spec = SpecState(index, len(req.output_ids))
        elif state.seen_outputs < len(req.output_ids):
            state.index.extend(req.output_ids[state.seen_outputs :])
            state.seen_outputs = len(req.output_ids)
        if state.unverified is not None:  # the step after an undrafted lookup: was it right?
            at, token = state.unverified
            if at < len(req.output_ids):
                state.learn(req.output_ids[at] == token)
            state.unverified = None
        draft = state.index.draft(k)
        cut = next((i for i, t in enumerate(draft) if t < 0), len(draft))
        draft = draft[:cut]  # never an image placeholder (they have no embedding)
        length = draft_length(state.acceptance, len(draft), self.draft_cost)
        if draft and length == 0:
            state.unverified = (len(req.output_ids), draft[0])
        return draft[:length]

    # --- verification ----------------------------------------------------------------------

    def target_logits(self, logits: torch.Tensor, req: Req) -> torch.Tensor:
        """The sampler's edits of raw logits [R, V] for `req`'s rows, where row i predicts its
        output token `len(output_ids) + i`: logit bias, and the stop-token ban while below
        `min_new_tokens`. Returns a new tensor when anything changed."""
        p = req.sampling_params
        if p.logit_bias:
            logits = logits.clone()
            apply_penalties(logits, [req] * logits.shape[0])  # bias only: no penalties here
        short = p.min_new_tokens - len(req.output_ids)  # rows [0, short) may not stop
        if short > 0:
            banned = set(p.stop_token_ids) | (set() if p.ignore_eos else set(self.eos_ids))
            if banned:
                logits = logits.clone() if not p.logit_bias else logits
                logits[:short, sorted(banned)] = float("-inf")
        return logits

    def accept(self, logits: torch.Tensor, req: Req, draft: list[int]) -> list[int]:
        """The tokens to append after a verify pass: accepted drafts, then one token of the
        target's own. logits [len(draft) + 1, V] (raw; see the module doc for the rule)."""
        logits = self.target_logits(logits, req)
        p = req.sampling_params
        if p.is_greedy:
            chain = logits.argmax(dim=-1).tolist()
            accepted = 0
            while accepted < len(draft) and draft[accepted] == chain[accepted]:
                accepted += 1
            return [*draft[:accepted], chain[accepted]]
        probs = target_probs(logits, p)  # [len(draft) + 1, V]
        rng = req.sampling_rng
        out: list[int] = []
        for i, token in enumerate(draft):
            if rng.random() < float(probs[i, token]):
                out.append(token)
                continue
            residual = probs[i].clone()
            residual[token] = 0.0
            out.append(draw(residual, rng) if float(residual.sum()) > 0 else token)
            return out
        out.append(draw(probs[len(draft)], rng))
        return out

    def verify(
        self, req: Req, logits: torch.Tensor, draft: list[int], outputs: Any, cache: Any
    ) -> int:
        """After the pass that computed KV for `req`'s pending tokens and `draft`: append the
        accepted tokens through `outputs` (an OutputProcessor) until the first finish, keep the
        KV of what was appended and free the rest (through `cache`, a CacheManager). Returns
        how many tokens were appended. KV stays consistent even if acceptance raises."""
        start, computed = req.kv_len, req.pending_len + len(draft)
        appended = 0
        accepted_drafts = 0
        try:
            tokens = self.accept(logits, req, draft)
            accepted_drafts = len(tokens) - 1
            for token in tokens:
                outputs.append_token(req, token, None, None)
                appended += 1
                if req.is_finished:
                    break
        finally:
            keep = max(0, min(computed, req.seq_len - 1 - start))  # the last token stays pending
            req.kv_len = start + keep
            row = req.req_pool_row
            cache.allocator.free(cache.req_table.read(row, start + computed, start + keep))
            state = req.spec
            state.verify_ct += 1
            state.draft_tokens += len(draft)
            state.accepted_tokens += min(accepted_drafts, appended)
            for _ in range(accepted_drafts):
                state.learn(True)
            if accepted_drafts < len(draft):
                state.learn(False)
        return appended
