"""The decode-step breakdown measures the live engine's parts and leaves the engine as it was."""

from __future__ import annotations

import pytest

from benchmarks import bench_decode_breakdown as breakdown
from radixgen.runtime.scheduler import loop


def test_parts_add_up_to_the_step_and_the_wrappers_come_off(engine):
    """Per-operation passes (the fused step off), so attention is timed on its own."""
    build_decode = loop.build_decode
    runner = engine.scheduler.runner
    fused = runner.fused_decode
    engine.scheduler.call(lambda: setattr(runner, "fused_decode", None)).result()
    try:
        table = breakdown.measure(engine, batch=2, new_tokens=4, rounds=1)
    finally:
        engine.scheduler.call(lambda: setattr(runner, "fused_decode", fused)).result()
    assert set(table) == {"step", *breakdown.PARTS}
    assert sum(table[p] for p in breakdown.PARTS) == pytest.approx(table["step"])
    for part in ("attention", "output head", "layers, rest", "sample"):
        assert table[part] > 0, part
    scheduler = engine.scheduler
    assert "_run_decode" not in vars(scheduler) and "_emit" not in vars(scheduler)
    assert "forward" not in vars(scheduler.runner) and "plan" not in vars(scheduler.runner.planner)
    assert "logits" not in vars(scheduler.runner.model)
    assert loop.build_decode is build_decode
    text = breakdown.report({2: table}, "float32", fused=False)
    assert "| attention |" in text and "tok/s" in text
