"""The radix cache never changes an answer, and reports exactly what it reused."""

from __future__ import annotations

import dataclasses
import re

import pytest

from radixgen import Engine
from tests.helpers import assert_idle_invariant

GREEDY = {"max_new_tokens": 12, "temperature": 0, "ignore_eos": True}

_FEW_SHOT = "".join(
    f"Question: What is {a} plus {b}?\nAnswer: {a + b}\n\n"
    for a, b in [(2, 3), (10, 7), (41, 1), (6, 6), (13, 29), (100, 11), (8, 9), (70, 5)]
)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _mixed_prompts() -> list[str]:
    """16 prompts of mixed lengths; several share the few-shot prefix."""
    questions = [
        f"Question: What is {a} plus {b}?\nAnswer:"
        for a, b in [(3, 4), (12, 30), (99, 1), (5, 55), (21, 21), (7, 70)]
    ]
    prompts = [_FEW_SHOT + q for q in questions]
    prompts += [
        "Hello",
        "The weather today is",
        "Once upon a time, in a kingdom by the sea,",
        "List three fruits:",
        "def add(a, b):\n",
        "Translate to French: good morning",
        "The quick brown fox",
        "Why is the sky blue?",
        "Roses are red,",
        "1, 2, 3, 4,",
    ]
    return prompts


def test_cold_and_warm_prefix_give_identical_outputs(engine):
    assert engine.flush_cache()
    prompt = _FEW_SHOT + "Question: What is 4 plus 4?\nAnswer:"
    cold = engine.generate(prompt, GREEDY)
    assert cold["meta_info"]["cached_tokens"] == 0
    warm = engine.generate(prompt, GREEDY)
    prompt_len = cold["meta_info"]["prompt_tokens"]
    # The whole prompt is cached except its last token, whose logits must be recomputed.
    assert warm["meta_info"]["cached_tokens"] == prompt_len - 1
    assert warm["output_ids"] == cold["output_ids"]
    assert_idle_invariant(engine)


def test_cached_tokens_equals_the_matched_prefix(engine, tokenizer):
    assert engine.flush_cache()
    first = _FEW_SHOT + "Question: What is 1 plus 1?\nAnswer:"
    second = _FEW_SHOT + "Question: What is 9 plus 8?\nAnswer:"
    out = engine.generate(first, GREEDY)
    stored = tokenizer(first)["input_ids"] + out["output_ids"][:-1]  # the last has no KV
    second_ids = tokenizer(second)["input_ids"]
    out2 = engine.generate(second, GREEDY)
    assert out2["meta_info"]["cached_tokens"] == _common_prefix(stored, second_ids)
    assert out2["meta_info"]["cached_tokens"] > len(tokenizer(_FEW_SHOT)["input_ids"]) - 2


@pytest.fixture(scope="module")
def alone_outputs(engine):
    """Each mixed prompt run by itself on a cold cache."""
    results = []
    for prompt in _mixed_prompts():
        assert engine.flush_cache()
        results.append(engine.generate(prompt, GREEDY)["output_ids"])
    return results


def test_batch_of_16_mixed_lengths_matches_running_alone(engine, alone_outputs):
    assert engine.flush_cache()
    batched = engine.generate(_mixed_prompts(), GREEDY)
    assert [o["output_ids"] for o in batched] == alone_outputs
    # The shared few-shot prefix was computed once and reused by the other five.
    assert sum(o["meta_info"]["cached_tokens"] > 0 for o in batched[:6]) >= 5
    assert_idle_invariant(engine)


def test_chunked_prefill_matches_unchunked(engine):
    """`engine` prefills in chunks of 128; a second engine prefills in one pass."""
    prompt = _FEW_SHOT * 3 + "Question: What is 2 plus 2?\nAnswer:"  # ~450 tokens
    assert engine.flush_cache()
    chunked = engine.generate(prompt, GREEDY)
    assert chunked["meta_info"]["prompt_tokens"] > 3 * 128
    with Engine(
        model="smollm2", dtype="float32", kv_cache_tokens=2048, chunked_prefill_size=-1
    ) as whole:
        unchunked = whole.generate(prompt, GREEDY)
    assert chunked["output_ids"] == unchunked["output_ids"]


def test_prefill_only_request_caches_its_whole_prompt(engine, tokenizer):
    """max_new_tokens=0 warms the cache: a later request extending the prompt reuses all of it
    (the prompt was prefilled in several chunks, each inserted into the tree)."""
    assert engine.flush_cache()
    ids = tokenizer(_FEW_SHOT * 3)["input_ids"]
    warm = engine.generate(input_ids=ids, sampling_params={"max_new_tokens": 0})
    assert warm["output_ids"] == [] and warm["meta_info"]["finish_reason"]["type"] == "length"
    again = engine.generate(input_ids=ids + [198], sampling_params={"max_new_tokens": 0})
    assert again["meta_info"]["cached_tokens"] == len(ids)


def test_disabled_radix_cache_reuses_nothing_and_agrees():
    prompt = _FEW_SHOT + "Question: What is 5 plus 5?\nAnswer:"
    with Engine(
        model="smollm2", dtype="float32", kv_cache_tokens=2048, disable_radix_cache=True
    ) as off:
        first = off.generate(prompt, GREEDY)
        second = off.generate(prompt, GREEDY)
        stats = assert_idle_invariant(off)
    assert first["meta_info"]["cached_tokens"] == second["meta_info"]["cached_tokens"] == 0
    assert first["output_ids"] == second["output_ids"]
    assert stats["kv_free"] == stats["kv_total"]  # nothing kept after the requests


def test_batch_sharing_a_cached_prefix_matches_running_alone(engine, monkeypatch):
    """Requests over cached few-shot prefixes take the shared-prefix (cascade) attention path in
    prefill and decode: one prefix shared by all, then one per group (two instructions over the
    same examples). Their outputs equal each request run alone on a cold cache."""
    instructions = [  # each longer than Tuning.min_shared_prefix tokens
        "Now add the two numbers of the next question and write their sum as digits.\n\n",
        "Next, answer with one number only, with no words before or after it.\n\n",
    ]
    questions = [
        _FEW_SHOT + instruction + f"Question: What is {a} plus {b}?\nAnswer:"
        for instruction in instructions
        for a, b in [(3, 5), (17, 4), (60, 6), (2, 90)]
    ]
    alone = []
    for prompt in questions:
        assert engine.flush_cache()
        alone.append(engine.generate(prompt, GREEDY)["output_ids"])
    assert engine.flush_cache()
    for instruction in instructions:  # cache both group prefixes
        engine.generate(_FEW_SHOT + instruction, {"max_new_tokens": 0})
    planner = engine.scheduler.runner.planner
    every_segment = dataclasses.replace(  # even 4-request groups, with or without the kernel
        planner.tuning,
        min_segment_saving=0,
        min_in_place_segment_saving=0,
        min_in_place_decode_segment_saving=0,
        amx_min_segment_saving=0,
    )
    monkeypatch.setattr(planner, "tuning", every_segment)
    levels = []
    original = planner.plan

    def plan_and_record(batch):
        plan = original(batch)
        levels.extend(level.num_problems for level in plan.shared)
        return plan

    monkeypatch.setattr(planner, "plan", plan_and_record)
    batched = engine.generate(questions, GREEDY)
    assert 1 in levels and 2 in levels, "the shared and per-group prefix paths were not both used"
    assert [o["output_ids"] for o in batched] == alone
    assert_idle_invariant(engine)


def test_one_question_over_different_cached_prefixes_prefills_in_one_batch(engine):
    """The same question asked of two cached articles shares no uncached KV, so neither request
    waits for the other (in-batch sharing defers only requests continuing the same prefix)."""
    assert engine.flush_cache()
    articles = [
        "Article: The river town rebuilt its old stone bridge after the spring flood.\n",
        "Article: A small bakery began selling bread made from grain grown on its roof.\n",
    ]
    engine.generate(articles, {"max_new_tokens": 0})
    question = "Question: In one sentence, what is the article about?\nAnswer:"
    before = engine.stats()["prefill_batches"]
    outs = engine.generate([article + question for article in articles], GREEDY)
    assert engine.stats()["prefill_batches"] - before == 1
    assert all(o["meta_info"]["cached_tokens"] > 10 for o in outs)
    assert_idle_invariant(engine)


_BURST_SHOTS = _FEW_SHOT[: _FEW_SHOT.index("Question: What is 6")]  # 4 shots: whole prompts
_BURST_QUESTIONS = [  # stay inside the fixture's 128-token prefill chunk, all four together
    f"Question: What is {a} plus {b}?\nAnswer:" for a, b in [(4, 4), (15, 2), (30, 12), (9, 1)]
]


@pytest.fixture(scope="module")
def burst_alone(engine):
    """Each burst question asked alone, on a cold cache."""
    outputs = []
    for question in _BURST_QUESTIONS:
        assert engine.flush_cache()
        outputs.append(engine.generate(_BURST_SHOTS + question, GREEDY)["output_ids"])
    return outputs


def test_a_burst_over_an_uncached_prompt_computes_it_once_in_one_batch(
    engine, tokenizer, burst_alone
):
    """Questions sharing a prefix nobody has computed yet go in one prefill batch: the first
    publishes its prompt as it is admitted, the others reuse it inside the same forward pass
    (nobody waits a step), and every answer is the one the question gets alone."""
    assert engine.flush_cache()
    before = engine.stats()["prefill_batches"]
    outs = engine.generate([_BURST_SHOTS + q for q in _BURST_QUESTIONS], GREEDY)
    assert engine.stats()["prefill_batches"] - before == 1
    assert outs[0]["meta_info"]["cached_tokens"] == 0
    shots_len = len(tokenizer(_BURST_SHOTS)["input_ids"])
    assert all(o["meta_info"]["cached_tokens"] >= shots_len - 1 for o in outs[1:])
    assert [o["output_ids"] for o in outs] == burst_alone
    assert_idle_invariant(engine)


def _failing_forward(engine, monkeypatch, failures: int) -> list[int]:
    """Make the runner's first `failures` forward passes raise; returns the batch sizes seen."""
    runner = engine.scheduler.runner
    real_forward = runner.forward
    calls: list[int] = []

    def fail_first(batch):
        calls.append(batch.batch_size)
        if len(calls) <= failures:
            raise RuntimeError("injected forward failure")
        return real_forward(batch)

    monkeypatch.setattr(runner, "forward", fail_first)
    return calls


def test_a_pass_that_fails_is_rerun_one_request_at_a_time(engine, monkeypatch, burst_alone):
    """A batched pass that raises costs nobody anything: each request of the batch runs alone
    (the publisher first, so its batch-mates still reuse its prompt) and every answer is the
    one the question gets alone."""
    assert engine.flush_cache()
    calls = _failing_forward(engine, monkeypatch, failures=1)
    outs = engine.generate([_BURST_SHOTS + q for q in _BURST_QUESTIONS], GREEDY)
    monkeypatch.undo()
    assert calls[0] == len(_BURST_QUESTIONS)  # the whole burst was in the failed pass
    assert calls[1 : 1 + len(_BURST_QUESTIONS)] == [1] * len(_BURST_QUESTIONS)
    assert [o["output_ids"] for o in outs] == burst_alone
    assert all(o["meta_info"]["finish_reason"]["type"] != "abort" for o in outs)
    assert_idle_invariant(engine)


def test_a_publisher_whose_pass_fails_alone_resets_the_engine(engine, monkeypatch, burst_alone):
    """If the request that published its prompt fails even alone, its batch-mates may have
    matched slots that hold no KV: every active request ends with an internal error naming
    only its own id (never the exception), the cache is dropped, and the engine serves on."""
    assert engine.flush_cache()
    _failing_forward(engine, monkeypatch, failures=2)  # the batch, then the publisher alone
    outs = engine.generate([_BURST_SHOTS + q for q in _BURST_QUESTIONS], GREEDY)
    monkeypatch.undo()
    messages = []
    for out in outs:
        reason = out["meta_info"]["finish_reason"]
        assert reason["type"] == "abort" and reason["status_code"] == 500
        assert re.fullmatch(r"internal error \(request [0-9a-f]{32}\)", reason["message"])
        messages.append(reason["message"])
    assert len(set(messages)) == len(outs)  # each names its own request
    stats = assert_idle_invariant(engine)
    assert stats["kv_free"] == stats["kv_total"]  # nothing cached, nothing leaked
    again = engine.generate(_BURST_SHOTS + _BURST_QUESTIONS[0], GREEDY)
    assert again["meta_info"]["cached_tokens"] == 0
    assert again["output_ids"] == burst_alone[0]
