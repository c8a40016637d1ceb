"""The engine's kernel choice end to end: with `disable_native_kernels` every operation runs on
PyTorch (no 4-bit or 8-bit weights in float32, no in-place attention, torch element-wise chains)
and greedy float32 answers equal those of the native kernels."""

from __future__ import annotations

import pytest

from radixgen import Engine

PROMPTS = ["The capital of France is", "List three primary colours:"]


@pytest.fixture(scope="module")
def torch_engine():
    with Engine(
        model="smollm2", dtype="float32", kv_cache_tokens=2048, disable_native_kernels=True
    ) as eng:
        yield eng


def test_disabled_native_kernels_answer_as_the_native_ones(engine, torch_engine):
    native = engine.scheduler.runner
    if native.kernels.decode_attention is None:
        pytest.skip("no C compiler: the session engine is on PyTorch too")
    runner = torch_engine.scheduler.runner
    kernels = runner.kernels
    assert kernels.decode_attention is None and kernels.block_matmul is None
    assert not kernels.elementwise.is_native and kernels.int4 is None
    assert runner.model.int8_head is None
    assert native.model.int8_head is not None  # the session engine does take its native paths
    params = {"max_new_tokens": 16, "temperature": 0}
    expected = [o["output_ids"] for o in engine.generate(PROMPTS, params)]
    assert [o["output_ids"] for o in torch_engine.generate(PROMPTS, params)] == expected


def test_the_reference_attention_executor_answers_as_the_default_one(engine):
    """`--attention-backend reference` runs every plan in plain PyTorch: same greedy tokens."""
    params = {"max_new_tokens": 12, "temperature": 0}
    expected = [o["output_ids"] for o in engine.generate(PROMPTS, params)]
    with Engine(
        model="smollm2", dtype="float32", kv_cache_tokens=2048, attention_backend="reference"
    ) as reference:
        assert type(reference.scheduler.runner.attention).__name__ == "ReferenceExecutor"
        assert [o["output_ids"] for o in reference.generate(PROMPTS, params)] == expected
