"""Prefix reuse: forks commit their shared prefix once; `run_batch` pre-caches the constant
prefix found by tracing, so it is computed once for the whole batch (runtime counters)."""

from __future__ import annotations

import uuid

import radixgen as sgl
from radixgen.lang.tracer import extract_prefix_by_tracing
from tests.lang.conftest import prefill, server_counters

LONG_CONTEXT = (
    "You are a careful assistant. Read the question, think about it, and answer in a few "
    "words. Prefer short answers. Never repeat the question. Use plain words.\n"
)


def _prompt_tokens(backend, text: str) -> int:
    out = prefill(backend, {"text": text, "sampling_params": {"max_new_tokens": 0}})
    return out["meta_info"]["prompt_tokens"]


@sgl.function
def branches(s, nonce):
    s += "Session " + nonce + ". " + LONG_CONTEXT
    forks = s.fork(3)
    forks += lambda i: f"Idea {i}:" + sgl.gen("idea", max_tokens=3)
    forks.join()


def test_fork_branches_reuse_the_committed_prefix(native_backend):
    nonce = uuid.uuid4().hex  # a prefix no earlier test cached
    state = branches.run(nonce=nonce, backend=native_backend, temperature=0)
    metas = state.get_meta_info("idea")
    assert state.error() is None and len(metas) == 3
    shared = _prompt_tokens(native_backend, f"Session {nonce}. {LONG_CONTEXT}")
    for meta in metas:  # the last prefix token is recomputed to produce logits
        assert meta["cached_tokens"] >= shared - 1, (meta, shared)


def test_run_batch_computes_the_common_prefix_once(native_backend):
    nonce = uuid.uuid4().hex  # a fresh prefix: nothing cached yet

    def body(s, text):
        s += "Session " + nonce + ". " + LONG_CONTEXT
        s += "Text: " + text + "\nTopic:" + sgl.gen("topic", max_tokens=2)

    program = sgl.function(body)
    prefix = extract_prefix_by_tracing(program, native_backend)
    assert prefix == f"Session {nonce}. {LONG_CONTEXT}Text: " and len(prefix) > 64
    texts = ["cats purr", "stocks fell", "rain tomorrow", "goal scored"]
    before = server_counters(native_backend)
    states = program.run_batch([{"text": t} for t in texts], backend=native_backend, temperature=0)
    after = server_counters(native_backend)
    assert all(s.error() is None for s in states)
    prompt = after["prompt_tokens"] - before["prompt_tokens"]
    cached = after["cached_tokens"] - before["cached_tokens"]
    shared = _prompt_tokens(native_backend, prefix)
    computed = prompt - cached
    # one pre-cache request computes the prefix; each program computes only its own tail
    assert after["finished_requests"] - before["finished_requests"] == len(texts) + 1
    tails = sum(s.get_meta_info("topic")["prompt_tokens"] - shared for s in states)
    assert computed <= shared + tails + 2 * len(texts), (computed, shared, tails)
    assert computed < 2 * shared
    for state in states:
        assert state.get_meta_info("topic")["cached_tokens"] >= shared - 1


def test_cache_and_flush(native_backend):
    nonce = uuid.uuid4().hex

    def body(s, text):
        s += "Session " + nonce + ". " + LONG_CONTEXT + text

    program = sgl.function(body)
    assert program.cache(native_backend) == f"Session {nonce}. {LONG_CONTEXT}"
    assert sgl.flush_cache(native_backend) is True
