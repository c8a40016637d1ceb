"""The fused decode step (`FusedDecode`: every layer of a narrow pass in one native call) computes
bit for bit what the per-operation path computes.

The session engine (float32) runs the same requests with the fused path and without it (switched
on the scheduler thread between runs, so the model loads once), and compares every output
token's log-probability for exact equality: a different rounding anywhere in 30 layers would
show. A batch of requests sharing no prefix decodes in fused steps; speculative verify passes
(several tokens of one request, causal) go through it too. The bfloat16 counterpart is in
test_bfloat16.py.
"""

from __future__ import annotations

import contextlib

import pytest

from radixgen.runtime.scheduler.speculative import Speculator
from tests.helpers import assert_idle_invariant

PROMPTS = [
    "The capital of France is",
    "Write a short poem about the sea and the wind, in four lines.",
    "def fibonacci(n):\n    ",
]
GREEDY = {"temperature": 0, "max_new_tokens": 12, "ignore_eos": True}


@contextlib.contextmanager
def fused(engine, on: bool):
    """The engine's fused path on or off while the block runs; yields it (None when off)."""
    runner = engine.scheduler.runner
    path = runner.fused_decode
    if path is None:
        pytest.skip("no fused decode step for this engine on this host")
    engine.scheduler.call(lambda: setattr(runner, "fused_decode", path if on else None)).result()
    try:
        yield path if on else None
    finally:
        engine.scheduler.call(lambda: setattr(runner, "fused_decode", path)).result()


def run(engine, on: bool, **kwargs) -> tuple[list[dict], int]:
    """The outputs of PROMPTS on a flushed cache, and how many passes ran fused."""
    assert engine.flush_cache()
    with fused(engine, on) as path:
        before = path.passes if path else 0
        outs = engine.generate(PROMPTS, GREEDY, **kwargs)
        passes = (path.passes - before) if path else 0
    assert_idle_invariant(engine)
    return outs, passes


def test_fused_steps_give_bit_identical_logprobs(engine):
    fused_outs, fused_passes = run(engine, True, return_logprob=True)
    plain_outs, _ = run(engine, False, return_logprob=True)
    assert fused_passes >= GREEDY["max_new_tokens"] - 1  # every decode step ran fused
    for a, b in zip(fused_outs, plain_outs, strict=True):
        assert a["output_ids"] == b["output_ids"]
        assert a["meta_info"]["output_token_logprobs"] == b["meta_info"]["output_token_logprobs"]


def test_fused_speculative_verify_passes_change_nothing(engine):
    scheduler = engine.scheduler
    speculator = Speculator(engine.config.replace(speculative_algorithm="ngram"), engine.eos_ids)
    prompt = engine.apply_chat_template(
        [{"role": "user", "content": "Repeat exactly: the red fox jumps over the red fox."}]
    )
    params = {"temperature": 0, "max_new_tokens": 24}
    scheduler.call(lambda: setattr(scheduler, "speculator", speculator)).result()
    try:
        results = {}
        for on in (True, False):
            assert engine.flush_cache()
            with fused(engine, on) as path:
                before = path.passes if path else 0
                results[on] = engine.generate(prompt, params)
                passes = (path.passes - before) if path else 0
            if on:
                assert passes > 0
    finally:
        scheduler.call(lambda: setattr(scheduler, "speculator", None)).result()
    assert results[True]["meta_info"]["spec_accepted_tokens"] > 0  # verify passes ran
    assert results[True]["output_ids"] == results[False]["output_ids"]
