"""KV pressure, retraction, abort and flush: every request finishes, answers do not change,
and memory returns to the idle invariant."""

from __future__ import annotations

import threading
import time

import pytest

from radixgen import Engine
from tests.helpers import assert_idle_invariant

NEW = 40
PARAMS = {"max_new_tokens": NEW, "temperature": 0, "ignore_eos": True}


def _prompts(n: int) -> list[str]:
    topics = [
        "rivers",
        "mountains",
        "bread",
        "clocks",
        "ships",
        "bees",
        "glass",
        "maps",
        "violins",
        "comets",
        "salt",
        "kites",
        "lanterns",
        "owls",
        "copper",
        "tea",
    ]
    return [
        f"Write a long paragraph about {t}, covering their history in detail:" for t in topics[:n]
    ]


@pytest.fixture(scope="module")
def small_engine():
    """A pool of 240 tokens: room for about four of these requests (~14 + 40 tokens each)."""
    with Engine(
        model="smollm2", dtype="float32", kv_cache_tokens=240, max_running_requests=16
    ) as eng:
        yield eng


def test_sixteen_requests_in_a_pool_for_four_all_finish_identically(engine, small_engine):
    prompts = _prompts(16)
    alone = []
    for prompt in prompts:
        assert engine.flush_cache()
        alone.append(engine.generate(prompt, PARAMS)["output_ids"])
    before = small_engine.stats()["retractions"]
    outs = small_engine.generate(prompts, PARAMS)
    stats = assert_idle_invariant(small_engine)
    assert stats["retractions"] > before, "the pool was meant to be too small for all 16"
    assert all(o["meta_info"]["finish_reason"]["type"] == "length" for o in outs)
    assert [o["output_ids"] for o in outs] == alone


def test_request_that_can_never_fit_gets_a_clear_error(small_engine):
    from radixgen import InvalidRequestError

    with pytest.raises(InvalidRequestError) as err:
        small_engine.generate("hello", {"max_new_tokens": 1000})
    assert err.value.param == "max_new_tokens" and "KV" in str(err.value)
    assert_idle_invariant(small_engine)


def test_abort_while_running_frees_memory(engine):
    results = []
    prompt = "Count slowly from one to one thousand: one, two,"
    thread = threading.Thread(
        target=lambda: results.append(
            engine.generate(prompt, {"max_new_tokens": 2000, "ignore_eos": True}, rid="to-abort")
        )
    )
    thread.start()
    deadline = time.time() + 30
    while engine.stats()["running_requests"] == 0 and time.time() < deadline:
        time.sleep(0.05)
    engine.abort("to-abort")
    thread.join(timeout=30)
    assert results and results[0]["meta_info"]["finish_reason"]["type"] == "abort"
    assert results[0]["meta_info"]["completion_tokens"] < 2000
    assert_idle_invariant(engine)


def test_abort_of_a_stream_by_closing_it_frees_memory(engine):
    stream = engine.generate(
        "Tell me a story.", {"max_new_tokens": 500, "ignore_eos": True}, stream=True
    )
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()  # the caller walked away: the engine aborts the request
    deadline = time.time() + 10
    while engine.stats()["running_requests"] and time.time() < deadline:
        time.sleep(0.05)
    assert_idle_invariant(engine)


def test_flush_is_refused_while_busy_and_empties_the_cache_when_idle(engine):
    engine.generate("Warm the cache with this sentence.", {"max_new_tokens": 2})
    assert engine.stats()["kv_evictable"] > 0
    done = threading.Event()
    thread = threading.Thread(
        target=lambda: (
            engine.generate("Busy", {"max_new_tokens": 300, "ignore_eos": True}),
            done.set(),
        )
    )
    thread.start()
    deadline = time.time() + 30
    while engine.stats()["running_requests"] == 0 and time.time() < deadline:
        time.sleep(0.02)
    assert not done.is_set() and engine.flush_cache() is False
    thread.join(timeout=120)
    assert engine.flush_cache() is True
    stats = assert_idle_invariant(engine)
    assert stats["kv_evictable"] == 0 and stats["kv_free"] == stats["kv_total"]
