"""StepCostModel: the online fit of a step's seconds that sizes a mixed step's chunk by time."""

from __future__ import annotations

import random

import pytest

from radixgen.runtime.scheduler.step_cost import MIN_STEPS, StepCostModel

LAW = (0.030, 0.0003, 0.0017, 0.00024)  # base, per decode token, per 1k context, per prefill


def law_seconds(decode: int, context: int, prefill: int, law=LAW) -> float:
    base, per_row, per_context, per_prefill = law
    return base + per_row * decode + per_context * context / 1000 + per_prefill * prefill


def feed(model: StepCostModel, steps: int, rng: random.Random, law=LAW, noise=0.0) -> None:
    for _ in range(steps):
        decode = rng.randint(1, 64)
        context = decode * rng.randint(50, 1500)
        prefill = rng.choice([0, 0, rng.randint(32, 512)])
        seconds = law_seconds(decode, context, prefill, law) * (1 + rng.uniform(-noise, noise))
        model.observe(decode, context, prefill, seconds)


def test_it_predicts_nothing_until_it_has_seen_enough_steps():
    model = StepCostModel()
    feed(model, MIN_STEPS - 1, random.Random(0))
    assert model.predict(8, 4000, 100) is None
    assert model.prefill_tokens_within(0.15, 8, 4000) is None
    feed(model, 1, random.Random(1))
    assert model.predict(8, 4000, 100) == pytest.approx(law_seconds(8, 4000, 100), rel=1e-3)


def test_it_recovers_a_linear_law_and_inverts_it_for_the_chunk():
    model = StepCostModel()
    feed(model, 200, random.Random(2))
    assert model.coefficients() == pytest.approx(LAW, rel=1e-3)
    # 64 decodes over 40k context: 30 + 19.2 + 68 = 117.2 ms, leaving 32.8 ms / 0.24 ms
    assert model.prefill_tokens_within(0.150, 64, 40_000) == 136
    assert model.prefill_tokens_within(0.150, 4, 2_000) == 480  # (150 - 34.6) / 0.24
    assert model.prefill_tokens_within(0.100, 64, 40_000) == 0  # the decodes alone overrun


def test_noisy_steps_still_size_the_chunk_close_to_the_law():
    model = StepCostModel()
    feed(model, 300, random.Random(3), noise=0.15)
    exact = (0.150 - law_seconds(32, 20_000, 0)) / LAW[3]
    assert model.prefill_tokens_within(0.150, 32, 20_000) == pytest.approx(exact, rel=0.15)


def test_it_follows_a_machine_that_slows_down():
    model = StepCostModel()
    rng = random.Random(4)
    feed(model, 200, rng)
    slower = tuple(2 * c for c in LAW)
    feed(model, 150, rng, law=slower)  # the old law's weight decays by 0.97 a step
    assert model.predict(16, 8000, 256) == pytest.approx(
        law_seconds(16, 8000, 256, slower), rel=0.02
    )


def test_decode_steps_alone_give_prefill_no_cost_and_no_chunk_size():
    model = StepCostModel()
    for decode in range(1, 40):
        model.observe(decode, 500 * decode, 0, law_seconds(decode, 500 * decode, 0))
    assert model.predict(8, 4000, 0) == pytest.approx(law_seconds(8, 4000, 0), rel=1e-2)
    assert model.prefill_tokens_within(0.15, 8, 4000) is None
