"""The optimal hit rate of the workload suite, computed by hand on small request sets."""

from __future__ import annotations

import pytest

from benchmarks.workloads.metrics import RunResult, best_of_rounds, optimal_hit_rate, percentile
from benchmarks.workloads.recording import TokenizedRequest


def req(prompt, output=(), logprob_start=None):
    return TokenizedRequest(list(prompt), list(output), logprob_start)


def test_shared_prefixes_count_once():
    # 4 + 4 + 3 prompt tokens; [1,2,3] is shared by the second, [1,2] by the third
    opt = optimal_hit_rate([req([1, 2, 3, 4]), req([1, 2, 3, 5]), req([1, 2, 9])])
    assert opt.prompt_tokens == 11
    assert opt.unique_tokens == 4 + 1 + 1
    assert opt.unbounded == 1 - 6 / 11
    assert opt.reusable_tokens == 3 + 2


def test_last_token_and_logprob_positions_must_be_computed():
    opt = optimal_hit_rate([req([1, 2, 3]), req([1, 2, 3]), req([1, 2, 3, 4], logprob_start=1)])
    assert opt.unique_tokens == 3 + 0 + 1
    assert opt.reusable_tokens == 0 + 2 + 1  # repeat: all but its last; scored: before 1


def test_outputs_are_reusable_but_not_their_last_token():
    # the second turn re-sends the first turn's prompt and answer [7, 8]
    opt = optimal_hit_rate([req([1, 2], output=[7, 8]), req([1, 2, 7, 8, 5])])
    assert opt.reusable_tokens == 3  # 1, 2, 7 were computed; 8 was only sampled
    assert opt.bounded == 3 / 7


def test_percentile_interpolates():
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0


def test_best_of_rounds_keeps_the_fastest_successful_round():
    slow = RunResult("mmlu", "radixgen", programs=4, programs_per_s=1.0)
    fast = RunResult("mmlu", "radixgen", programs=4, programs_per_s=3.0)
    failed = RunResult("mmlu", "radixgen", status="failed: boom")
    best = best_of_rounds([slow, failed, fast])
    assert best.programs_per_s == 3.0
    assert best.round_programs_per_s == [1.0, 3.0]
    assert best_of_rounds([failed]).status == "failed: boom"
    with pytest.raises(ValueError):
        best_of_rounds([])
