"""Mixed steps (`enable_mixed_chunk`) change when requests run, never what they compute: float32
greedy outputs with running decodes carried in the prefill chunks' passes are token-identical to
the same requests run with separate prefill and decode steps.

Arrivals are deterministic: a first wave is submitted while the scheduler waits at a gate; the
second wave is submitted from inside one first-wave request's output sink (on the scheduler
thread) once it has streamed a few tokens, so both runs see the second wave arrive at the same
point of the first wave's decoding. The second wave holds a prompt long enough to be chunked by
the mixed budget, a request that ends at its first token (max_new_tokens 1) and one that ends
a few tokens later; a first-wave request reaches max_new_tokens while the long prompt is still
being chunked; a constrained request jumps forward (several pending tokens in a step).

The session engine's mixing is switched per run on the scheduler thread, and restored after.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from radixgen.runtime.generate_input import GenerateInput
from radixgen.runtime.model.attention.plan import SplitPlan
from radixgen.runtime.request import FinishKind, Req
from radixgen.runtime.scheduler.step_cost import StepCostModel
from tests.helpers import assert_idle_invariant

TIMEOUT = 300
STEP_TOKENS = 64  # small, so the long prompt is chunked by the budget (not at CHUNK = 128)
STORY = (
    "In the spring of that year the village council met in the old granary to decide what to do "
    "about the bridge. The river had risen twice since the winter, and each time the water had "
    "carried away another plank. Marta, who kept the mill, argued that a stone bridge would last "
    "a hundred years; the blacksmith said iron was cheaper and could be built before the harvest. "
)
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
}
GREEDY = {"temperature": 0, "ignore_eos": True}
FIRST_WAVE = {  # label: (prompt, sampling params)
    "ends-mid-chunking": ("The capital of France is", {"max_new_tokens": 8}),
    "runs-through": ("Once upon a time", {"max_new_tokens": 40}),
    "jumps-forward": (
        "Give a city and its country as JSON:",
        {"max_new_tokens": 30, "json_schema": SCHEMA, "ignore_eos": False},
    ),
}
SECOND_WAVE = {
    "long-prompt": (" ".join([STORY] * 6), {"max_new_tokens": 8}),  # ~500 tokens
    "one-token": ("def add(a, b):\n", {"max_new_tokens": 1}),
    "short": ("Shopping list:\n1. apples\n2.", {"max_new_tokens": 6}),
}
TRIGGER = "runs-through"  # the second wave arrives once this request has streamed 3 tokens


def _request(engine, label: str, text: str, params: dict[str, Any]) -> Req:
    request = GenerateInput.of(
        text=text, sampling_params={**GREEDY, **params}, rid=label, stream=label == TRIGGER
    )
    (req,), _ = engine.make_requests(request)
    return req


def _on_scheduler(engine, fn: Callable[[], Any]) -> Any:
    return engine.scheduler.call(fn).result(timeout=TIMEOUT)


@contextmanager
def mixing(
    engine,
    enabled: bool,
    step_tokens: int = STEP_TOKENS,
    step_seconds: float | None = None,
    cost: StepCostModel | None = None,
) -> Iterator[None]:
    """Mixed steps on or off, their token budget and their time target (off unless given, so
    chunk sizes do not depend on how fast this machine is) for the session engine, restored
    after."""
    mixed = engine.scheduler.mixed
    saved = (mixed.enabled, mixed.step_tokens, mixed.step_seconds, mixed.cost)

    def put(values: tuple[bool, int, float | None, StepCostModel]) -> None:
        mixed.enabled, mixed.step_tokens, mixed.step_seconds, mixed.cost = values

    _on_scheduler(engine, lambda: put((enabled, step_tokens, step_seconds, cost or mixed.cost)))
    try:
        yield
    finally:
        _on_scheduler(engine, lambda: put(saved))


def run_waves(engine, on_trigger: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run both waves from an empty cache; every request's final output by label, the stats
    deltas, and what the scheduler held when `ends-mid-chunking` finished."""
    assert engine.flush_cache()  # both runs compute every prompt
    finals: queue.Queue = queue.Queue()
    seen: dict[str, Any] = {}
    second = [_request(engine, label, *spec) for label, spec in SECOND_WAVE.items()]
    streamed = []

    def collect(out: dict[str, Any]) -> None:
        label = out["meta_info"]["id"]
        if label == "ends-mid-chunking" and out["meta_info"]["finish_reason"] is not None:
            chunked = engine.scheduler.chunked  # the sink runs on the scheduler thread
            seen["chunking-when-it-ended"] = chunked is not None and chunked.label
        if label == TRIGGER and out["meta_info"]["finish_reason"] is None:
            streamed.append(out)
            if len(streamed) == 3:
                if on_trigger is not None:
                    on_trigger()
                for req in second:
                    engine.scheduler.submit(req, collect)
            return
        if out["meta_info"]["finish_reason"] is not None:
            finals.put(out)

    before = engine.stats()
    gate = threading.Event()
    held = engine.scheduler.call(lambda: gate.wait(TIMEOUT))
    for label, spec in FIRST_WAVE.items():
        engine.scheduler.submit(_request(engine, label, *spec), collect)
    gate.set()
    held.result(timeout=TIMEOUT)
    total = len(FIRST_WAVE) + len(SECOND_WAVE)
    outs = [finals.get(timeout=TIMEOUT) for _ in range(total)]
    after = assert_idle_invariant(engine)
    seen["outputs"] = {out["meta_info"]["id"]: out for out in outs}
    seen["stats"] = {k: after[k] - before[k] for k in after if isinstance(after[k], int | float)}
    return seen


@pytest.fixture(scope="module")
def separate(engine) -> dict[str, Any]:
    """The reference: the same arrivals with separate prefill and decode steps."""
    with mixing(engine, False):
        return run_waves(engine)


def _assert_same_outputs(run: dict[str, Any], reference: dict[str, Any]) -> None:
    for label, expected in reference["outputs"].items():
        out = run["outputs"][label]
        assert out["output_ids"] == expected["output_ids"], label
        assert out["meta_info"]["finish_reason"] == expected["meta_info"]["finish_reason"], label


def test_the_reference_run_has_no_mixed_steps(separate):
    assert separate["stats"]["mixed_steps"] == 0
    outputs = separate["outputs"]
    assert len(outputs["one-token"]["output_ids"]) == 1
    assert len(outputs["ends-mid-chunking"]["output_ids"]) == 8
    assert separate["stats"]["forced_tokens"] > 0  # the constrained request jumped forward


@pytest.mark.parametrize("in_place_limit", [None, 16], ids=["one-plan", "split-plan"])
def test_mixed_steps_give_the_same_tokens(engine, separate, in_place_limit):
    """`split-plan` lowers the in-place extend limit (for both runs' passes), so the chunks
    gather and each mixed pass plans its decode rows apart (`SplitPlan`), as bfloat16 does."""
    planner = engine.scheduler.runner.planner
    saved = planner.max_in_place_extend
    real_plan = planner.plan
    plans: list[type] = []

    def recording_plan(batch):
        plan = real_plan(batch)
        plans.append(type(plan))
        return plan

    reference = separate
    try:
        if in_place_limit is not None:
            _on_scheduler(engine, lambda: setattr(planner, "max_in_place_extend", in_place_limit))
            with mixing(engine, False):
                reference = run_waves(engine)
        _on_scheduler(engine, lambda: setattr(planner, "plan", recording_plan))
        with mixing(engine, True):
            mixed = run_waves(engine)
    finally:
        _on_scheduler(engine, lambda: setattr(planner, "max_in_place_extend", saved))
        _on_scheduler(engine, lambda: vars(planner).pop("plan", None))
    _assert_same_outputs(mixed, reference)
    assert (SplitPlan in plans) == (in_place_limit is not None)
    stats = mixed["stats"]
    assert stats["mixed_steps"] > 0 and stats["mixed_decode_tokens"] > 0
    # The long prompt went through the mixed budget in several chunks, and a decoding request
    # reached its max_new_tokens in a mixed step while that prompt was still being chunked.
    long_prompt = mixed["outputs"]["long-prompt"]["meta_info"]["prompt_tokens"]
    assert long_prompt > 3 * STEP_TOKENS
    assert stats["mixed_prefill_tokens"] >= long_prompt
    assert stats["mixed_steps"] >= long_prompt // STEP_TOKENS
    assert mixed["chunking-when-it-ended"] == "long-prompt"
    assert reference.get("chunking-when-it-ended") is not True


class LearnedCost(StepCostModel):
    """A cost model that has learned this law and stops learning: 1 ms a step, 0.1 ms a
    decode token, 2 ms a prefill token (so the time target, not the machine, sets the chunk)."""

    def observe(self, *args: Any) -> None:
        pass

    def coefficients(self) -> np.ndarray:
        return np.array([1e-3, 1e-4, 0.0, 2e-3])


def test_the_time_target_holds_the_chunk_to_what_fits(engine, separate):
    """With an 81 ms target, the model allows (81 - 1 - 0.1 x decodes) / 2 <= 39 prefill tokens
    beside the running decodes, below the token budget's 64 - decodes: every mixed step keeps to
    it, the long prompt takes that many more chunks, and no token changes."""
    mixed_steps = engine.scheduler.mixed
    real_run = mixed_steps.run
    carried: list[int] = []

    def recording_run(batch):
        carried.append(sum(batch.extend_lens))
        real_run(batch)

    _on_scheduler(engine, lambda: setattr(mixed_steps, "run", recording_run))
    try:
        with mixing(engine, True, step_seconds=0.081, cost=LearnedCost()):
            timed = run_waves(engine)
    finally:
        _on_scheduler(engine, lambda: vars(mixed_steps).pop("run", None))
    _assert_same_outputs(timed, separate)
    assert carried and max(carried) <= 39 < STEP_TOKENS - len(FIRST_WAVE)
    assert 39 in carried  # the long prompt's chunks fill what the model allows
    long_prompt = timed["outputs"]["long-prompt"]["meta_info"]["prompt_tokens"]
    assert len(carried) >= long_prompt // 39


class InjectedFault(RuntimeError):
    pass


def test_a_pass_failing_for_one_decode_costs_nobody_else(engine, separate):
    """A decoding request whose forward pass fails (batched and alone) in a mixed step ends
    with an internal error; the others produce what they produce without it, and its new KV
    slots go back to the pool."""
    runner = engine.scheduler.runner
    real_forward = runner.forward
    bad: list[Req] = []

    def faulty(batch):
        row = bad[0].req_pool_row if bad else None
        if row is not None and row in batch.req_pool_indices.tolist():
            raise InjectedFault("injected forward fault")
        return real_forward(batch)

    def arm() -> None:  # in the trigger's sink: the next step is the first mixed one
        (req,) = [r for r in engine.scheduler.decode.running if r.label == "runs-through"]
        bad.append(req)
        runner.forward = faulty

    try:
        with mixing(engine, True):
            run = run_waves(engine, on_trigger=arm)
    finally:
        _on_scheduler(engine, lambda: vars(runner).pop("forward", None))
    failed = run["outputs"].pop("runs-through")
    reason = bad[0].finish_reason
    assert reason.kind is FinishKind.ABORT and reason.status_code == 500
    assert (
        failed["meta_info"]["finish_reason"]["message"] == f"internal error (request {bad[0].rid})"
    )
    assert len(failed["output_ids"]) == 3  # it ended in the step after the trigger
    assert run["stats"]["mixed_steps"] > 0
    reference = {**separate, "outputs": dict(separate["outputs"])}
    reference["outputs"].pop("runs-through")
    _assert_same_outputs(run, reference)
