"""The optimal hit rate of the workload suite, computed by hand on small request sets."""

from __future__ import annotations

import pytest

from benchmarks.workloads.metrics import (
    RunResult,
    median_round,
    optimal_hit_rate,
    paired_ratio,
    percentile,
    round_ratios,
)
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


def run(pps: float, system: str = "radixgen") -> RunResult:
    return RunResult("mmlu", system, programs=4, programs_per_s=pps)


FAILED = RunResult("mmlu", "radixgen", status="failed: boom")


def test_median_round_is_a_real_round_and_keeps_every_round_in_order():
    middle = median_round([run(3.0), FAILED, run(1.0), run(2.0)])
    assert middle.programs_per_s == 2.0
    assert middle.round_programs_per_s == [3.0, None, 1.0, 2.0]
    assert median_round([run(4.0), run(1.0)]).programs_per_s == 1.0  # lower of an even count
    assert median_round([FAILED]).status == "failed: boom"
    with pytest.raises(ValueError):
        median_round([])


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # the machine ran fast in round 2: separately chosen rounds would give 9/1 or 3/3
    fast = median_round([run(2.0), run(9.0), run(3.0), FAILED])
    slow = median_round(
        [run(1.0, "no-cache"), run(3.0, "no-cache"), run(1.0, "no-cache"), run(1.0)]
    )
    assert round_ratios(fast, slow) == [2.0, 3.0, 3.0]  # round 4 failed on one side
    assert paired_ratio(fast, slow) == 3.0
    assert paired_ratio(run(6.0), run(2.0)) == 3.0  # single runs: the plain ratio
    assert paired_ratio(fast, FAILED) is None
    assert paired_ratio(None, slow) is None
