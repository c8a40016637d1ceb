"""N-gram drafting and the speculative acceptance rule, without a model.

The acceptance rule is checked statistically: over many seeded trials on a small vocabulary, the
tokens `Speculator.accept` emits must follow the request's processed target distribution (the
one the sampler draws from). A chi-square test over the first emitted token (and the second,
given the first draft was accepted) must pass, and the same check must reject rules that are
wrong in the ways a speculative sampler goes wrong.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from radixgen.runtime.config import EngineConfig
from radixgen.runtime.request import LogprobOptions, Req
from radixgen.runtime.sampler import target_probs
from radixgen.runtime.sampling_params import SamplingParams
from radixgen.runtime.scheduler.speculative import NgramIndex, Speculator, draft_length, draw

# --- drafting ------------------------------------------------------------------------------


def reference_draft(tokens: list[int], k: int, min_n: int, max_n: int) -> list[int]:
    """The drafting rule, by brute force: the longest suffix (max_n..min_n) that occurred
    earlier; the tokens after its most recent earlier occurrence."""
    length = len(tokens)
    for n in range(min(max_n, length - 1), min_n - 1, -1):
        suffix = tokens[length - n :]
        for end in range(length - 1, n - 1, -1):  # most recent first; end < length
            if tokens[end - n : end] == suffix:
                return tokens[end : end + k]
    return []


@pytest.mark.parametrize("min_n,max_n", [(1, 1), (1, 4), (2, 5), (3, 3)])
def test_incremental_index_drafts_as_the_brute_force_rule(min_n, max_n):
    rng = random.Random(min_n * 10 + max_n)
    for trial in range(30):
        vocab = rng.choice([3, 5, 20])
        tokens = [rng.randrange(vocab) for _ in range(rng.randint(0, 12))]
        index = NgramIndex(tokens, min_n, max_n)
        for _ in range(40):
            k = rng.randint(1, 6)
            assert index.draft(k) == reference_draft(tokens, k, min_n, max_n), (trial, tokens)
            new = [rng.randrange(vocab) for _ in range(rng.choice([1, 1, 1, 3]))]
            tokens += new
            index.extend(new)


def test_draft_copies_what_followed_the_most_recent_longest_match():
    #         0  1  2  3  4  5  6  7  8  9 10 11
    tokens = [7, 1, 2, 3, 9, 1, 2, 3, 4, 5, 6, 1, 2, 3]
    index = NgramIndex(tokens, 1, 3)
    assert index.draft(3) == [4, 5, 6]  # suffix [1, 2, 3] last occurred ending at 8
    index.extend([4])  # suffix [2, 3, 4] occurred once: the draft follows it
    assert index.draft(2) == [5, 6]
    assert NgramIndex([1, 2, 3], 1, 3).draft(4) == []  # nothing repeats
    assert NgramIndex([5, 5, 5], 2, 2).draft(4) == [5]  # overlapping occurrence


def make_req(tokens: list[int], max_new_tokens: int = 64, **params) -> Req:
    """A decoding request whose last token (its only output so far) is pending."""
    req = Req(
        "r",
        tokens[:-1],
        SamplingParams(max_new_tokens=max_new_tokens, **params),
        LogprobOptions(),
        detokenizer=None,
    )
    req.output_ids = tokens[-1:]
    req.kv_len = len(tokens) - 1
    return req


REPEATING = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3]  # drafts [4, 5, 6, ...]


# Drafts of 3, always as long as allowed, whatever the acceptance so far (the length rule is
# tested apart).
ALWAYS_LONGEST = EngineConfig(
    speculative_algorithm="ngram",
    speculative_num_draft_tokens=3,
    tune=("speculative_draft_cost_bfloat16=0", "speculative_draft_cost_float32=0"),
)


def test_propose_shares_the_step_budget_among_speculating_requests():
    spec = Speculator(ALWAYS_LONGEST, frozenset({EOS}))
    k, cap = spec.num_draft_tokens, spec.max_step_tokens
    assert (k, cap) == (3, 8)  # 8: the measured default (docs/tuning.md)
    assert spec.propose([make_req(REPEATING)], 1000) == [[4, 5, 6]]
    # 3 requests: 8 - 3 pending = 5 draft tokens, shared 2, 2, 1
    drafts = spec.propose([make_req(REPEATING) for _ in range(3)], 1000)
    assert [len(d) for d in drafts] == [2, 2, 1]
    # a request that may not speculate takes no share
    reqs = [make_req(REPEATING, frequency_penalty=0.5), make_req(REPEATING)]
    assert spec.propose(reqs, 1000) == [[], [4, 5, 6]]
    assert spec.propose([make_req(REPEATING) for _ in range(cap)], 1000) is None  # too wide
    assert spec.propose([make_req(REPEATING)], 3) == [[4, 5]]  # free slots beyond the pending
    assert spec.propose([make_req(REPEATING, max_new_tokens=3)], 1000) == [[4]]  # 1 + 1 left
    assert spec.propose([make_req([1, 2, 3, 4])], 1000) is None  # nothing repeats


def test_propose_indexes_new_output_tokens_incrementally():
    spec = Speculator(ALWAYS_LONGEST, frozenset({EOS}))
    req = make_req([10, 11, 12, 13, 14, 10])
    assert spec.propose([req], 1000) == [[11, 12, 13]]
    req.output_ids += [11, 12, 13, 14, 99]  # 99 never seen: no draft
    req.kv_len = req.seq_len - 1
    assert spec.propose([req], 1000) is None
    req.output_ids += [10, 11]
    req.kv_len = req.seq_len - 1
    assert spec.propose([req], 1000) == [[12, 13, 14]]  # the most recent [10, 11] continues


def test_draft_length_maximizes_expected_tokens_per_cost():
    # expected tokens per cost of k drafts: (1 + a + ... + a^k) / (1 + 0.4 k)
    assert [draft_length(a, 7, 0.4) for a in (0.2, 0.33, 0.5, 0.7, 0.9, 0.97)] == [
        0,
        0,
        1,
        2,
        4,
        7,
    ]
    assert draft_length(0.97, 3, 0.4) == 3  # never past the limit
    assert draft_length(0.1, 5, 0.0) == 5  # cost 0: always the longest
    assert draft_length(1.0, 0, 0.4) == 0


def test_rejected_drafts_stop_drafting_and_the_looked_up_token_resumes_it():
    """A request whose drafts fail drafts nothing, but still looks its draft up; when the
    tokens it then produces match what it looked up, it drafts again."""
    config = EngineConfig(speculative_algorithm="ngram", dtype="bfloat16")
    assert config.num_draft_tokens() == 5 and config.tuning.speculative_draft_cost(
        config.torch_dtype
    ) == pytest.approx(0.4)
    spec = Speculator(config, frozenset({EOS}))
    req = make_req(REPEATING)
    assert spec.propose([req], 1000) == [[4, 5]]  # a new request: acceptance 0.7, k = 2
    for _ in range(4):
        req.spec.learn(False)  # e.g. verify passes that rejected the first draft token
    assert spec.propose([req], 1000) is None
    assert req.spec.unverified == (1, 4)  # output position 1 was looked up as token 4
    before = req.spec.acceptance
    req.output_ids.append(4)  # the step produced it: the draft would have been right
    req.kv_len = req.seq_len - 1
    spec.propose([req], 1000)
    assert req.spec.acceptance > before
    resumed_after = None
    for step in range(1, 7):  # the text keeps copying: each lookup is right
        req.output_ids.append(req.spec.index.draft(1)[0])
        req.kv_len = req.seq_len - 1
        if spec.propose([req], 1000) is not None:
            resumed_after = step
            break
    assert resumed_after is not None and resumed_after <= 3


def test_cli_flags_reach_the_engine_config():
    from radixgen.cli import build_parser, engine_config_from_args

    args = build_parser().parse_args(
        [
            "serve",
            "--speculative-algorithm",
            "ngram",
            "--speculative-num-draft-tokens",
            "5",
            "--speculative-ngram-min-match-window-size",
            "2",
            "--speculative-ngram-max-match-window-size",
            "6",
        ]
    )
    config = engine_config_from_args(args)
    assert config.speculative_algorithm == "ngram"
    assert config.speculative_num_draft_tokens == 5
    assert config.speculative_ngram_min_match_window_size == 2
    assert config.speculative_ngram_max_match_window_size == 6
    assert EngineConfig().speculative_algorithm is None  # off by default
    with pytest.raises(ValueError, match="speculative_algorithm"):
        EngineConfig(speculative_algorithm="eagle")
    with pytest.raises(ValueError, match="min <= max"):
        EngineConfig(
            speculative_ngram_min_match_window_size=4, speculative_ngram_max_match_window_size=2
        )


# --- acceptance ------------------------------------------------------------------------------

VOCAB = 6
EOS = 5
TRIALS = 3000


def fake_req(params: SamplingParams, seed: int, outputs: int = 3) -> SimpleNamespace:
    """What `accept` reads of a request."""
    return SimpleNamespace(
        sampling_params=params,
        sampling_rng=random.Random(seed),
        output_ids=[0] * outputs,
    )


def speculator() -> Speculator:
    return Speculator(EngineConfig(speculative_algorithm="ngram"), frozenset({EOS}))


# Three positions of target logits over a 6-token vocabulary slice.
LOGITS = torch.tensor(
    [
        [1.2, 0.4, 2.0, -0.5, 0.9, 0.1],
        [0.3, 1.7, -1.0, 1.1, 0.0, 0.6],
        [0.0, 0.5, 1.0, 1.5, -0.5, 0.2],
    ],
    dtype=torch.float32,
)
PARAMS = {
    "temperature": SamplingParams(temperature=0.8),
    "top_p": SamplingParams(temperature=1.3, top_p=0.8),
    "top_k_min_p": SamplingParams(temperature=1.0, top_k=4, min_p=0.1),
    "logit_bias": SamplingParams(temperature=0.7, logit_bias={"3": 2.5}),
    "min_new_tokens": SamplingParams(temperature=1.0, min_new_tokens=5),
}


def expected_probs(params: SamplingParams, row: int, outputs: int) -> torch.Tensor:
    """The target distribution the sampler would draw from, computed independently of
    `accept`: bias, stop-token ban below min_new_tokens, then temperature and filters."""
    logits = LOGITS[row : row + 1].clone()
    for token, bias in (params.logit_bias or {}).items():
        logits[0, int(token)] += bias
    if outputs + row < params.min_new_tokens:
        logits[0, EOS] = float("-inf")
    return target_probs(logits, params)[0]


def chi_square_p_value(counts: list[int], probs: torch.Tensor) -> float:
    """Pearson's chi-square goodness of fit over the tokens with positive probability; a token
    with probability 0 that was emitted fails outright."""
    total = sum(counts)
    stat, cells = 0.0, 0
    for token, count in enumerate(counts):
        expected = total * float(probs[token])
        if expected == 0:
            if count:
                return 0.0
            continue
        stat += (count - expected) ** 2 / expected
        cells += 1
    dof = cells - 1  # the chi-square survival function is the regularised upper gamma
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0), torch.tensor(stat / 2.0)))


def emitted(accept, params: SamplingParams, draft: list[int], outputs: int = 3):
    """First emitted tokens over TRIALS seeded trials, and the second token in the trials
    whose first draft was accepted."""
    first, second = [0] * VOCAB, [0] * VOCAB
    for seed in range(TRIALS):
        req = fake_req(params, seed, outputs)
        tokens = accept(LOGITS[: len(draft) + 1], req, draft)
        first[tokens[0]] += 1
        if len(draft) > 1 and tokens[0] == draft[0] and len(tokens) > 1:
            second[tokens[1]] += 1
    return first, second


def check_rule(accept, params: SamplingParams, draft: list[int], outputs: int = 3) -> float:
    """The smaller p-value of the two goodness-of-fit tests (first token; second given the
    first draft accepted), against the target distributions."""
    first, second = emitted(accept, params, draft, outputs)
    p_values = [chi_square_p_value(first, expected_probs(params, 0, outputs))]
    if sum(second) >= 200:
        p_values.append(chi_square_p_value(second, expected_probs(params, 1, outputs)))
    return min(p_values)


CASES = [(name, [4, 1]) for name in PARAMS] + [  # a likely draft, then the second position
    ("temperature", [3]),  # an unlikely draft
    ("top_k_min_p", [3]),  # a draft the filter removes (probability 0)
]


@pytest.mark.parametrize("name,draft", CASES)
def test_accepted_tokens_follow_the_target_distribution(name, draft):
    assert check_rule(speculator().accept, PARAMS[name], draft) > 1e-3


def test_every_outcome_ends_in_one_token_of_the_target():
    spec = speculator()
    params = SamplingParams(temperature=1.0)
    for seed in range(300):
        tokens = spec.accept(LOGITS, fake_req(params, seed), [2])
        assert 1 <= len(tokens) <= 2
        if len(tokens) == 2:
            assert tokens[0] == 2  # the draft, accepted, then the target's own token


def test_greedy_accepts_the_argmax_chain_then_corrects():
    spec = speculator()
    greedy = SamplingParams(temperature=0)
    argmax = LOGITS.argmax(dim=-1).tolist()  # [2, 1, 3]
    assert spec.accept(LOGITS, fake_req(greedy, 0), argmax[:2]) == argmax  # all, then one more
    assert spec.accept(LOGITS[:1], fake_req(greedy, 0), []) == argmax[:1]
    assert spec.accept(LOGITS, fake_req(greedy, 0), [2, 0]) == [2, 1]  # second rejected
    assert spec.accept(LOGITS, fake_req(greedy, 0), [4, 1]) == [2]  # first rejected, corrected
    biased = SamplingParams(temperature=0, logit_bias={"4": 5.0})
    assert spec.accept(LOGITS[:2], fake_req(biased, 0), [4]) == [4, 4]


def test_min_new_tokens_bans_stop_tokens_per_drafted_position():
    spec = speculator()
    logits = torch.zeros(3, VOCAB)
    logits[:, EOS] = 10.0  # EOS is everyone's argmax
    params = SamplingParams(temperature=0, min_new_tokens=4, max_new_tokens=10)
    # 3 tokens generated: row 0 predicts the 4th (banned), row 1 the 5th (allowed).
    assert spec.accept(logits, fake_req(params, 0, outputs=3), [0, 1]) == [0, EOS]


class _Broken(Speculator):
    """Wrong acceptance rules, to show the statistical check can fail."""

    def __init__(self, how: str):
        super().__init__(EngineConfig(speculative_algorithm="ngram"), frozenset({EOS}))
        self.how = how

    def accept(self, logits, req, draft):
        probs = target_probs(self.target_logits(logits, req), req.sampling_params)
        rng = req.sampling_rng
        if self.how == "always_accept":
            return [*draft, draw(probs[len(draft)], rng)]
        token = draft[0]
        if rng.random() < float(probs[0, token]):
            return [token]
        # Resample from p itself, the draft not removed: over-weights the draft.
        return [draw(probs[0], rng)]


@pytest.mark.parametrize("how", ["always_accept", "resample_without_removal"])
def test_the_check_rejects_a_wrong_rule(how):
    params = PARAMS["temperature"]
    assert check_rule(_Broken(how).accept, params, [3]) < 1e-6


def test_draw_never_picks_a_zero_probability_token():
    probs = torch.tensor([0.0, 0.5, 0.0, 0.5, 0.0])
    rng = random.Random(1)
    assert {draw(probs, rng) for _ in range(500)} == {1, 3}
