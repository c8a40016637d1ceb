"""The default serving precision (bfloat16, prepacked kernels) answers like float32."""

from __future__ import annotations

import pytest

from radixgen import Engine
from tests.helpers import assert_idle_invariant


@pytest.fixture(scope="module")
def bf16_engine():
    with Engine(model="smollm2", dtype="bfloat16", kv_cache_tokens=4096) as eng:
        yield eng


def test_bfloat16_reference_answer_and_cache_reuse(bf16_engine):
    prompt = bf16_engine.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}]
    )
    params = {"max_new_tokens": 20, "temperature": 0}
    first = bf16_engine.generate(prompt, params)
    assert "Paris" in first["text"]
    batch = bf16_engine.generate([prompt] * 3 + ["Hello there"], params)
    assert all(o["output_ids"] == first["output_ids"] for o in batch[:3])
    assert all(o["meta_info"]["cached_tokens"] > 0 for o in batch[:3])
    assert_idle_invariant(bf16_engine)
