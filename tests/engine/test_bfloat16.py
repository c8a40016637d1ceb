"""The bfloat16 serving precision (prepacked kernels where oneDNN has them) answers like
float32. It runs on every host; on one without native bfloat16 matmuls it is slow but valid."""

from __future__ import annotations

import pytest
import torch

from radixgen import Engine
from tests.helpers import assert_idle_invariant


@pytest.fixture(scope="module")
def bf16_engine():
    with Engine(model="smollm2", dtype="bfloat16", kv_cache_tokens=4096) as eng:
        yield eng


def test_bfloat16_reference_answer_and_cache_reuse(bf16_engine):
    # The answer's every token leads its runner-up by >= 0.75 nats in float32: bfloat16's
    # rounding cannot flip it. ("What is the capital of France?" leads by 0.08 and flips to a
    # French phrase on AVX2 hosts, where the fused kernels round differently.)
    prompt = bf16_engine.apply_chat_template(
        [{"role": "user", "content": "What is the capital city of France? Answer in one word."}]
    )
    params = {"max_new_tokens": 20, "temperature": 0}
    first = bf16_engine.generate(prompt, params)
    assert "Paris" in first["text"]
    batch = bf16_engine.generate([prompt] * 3 + ["Hello there"], params)
    assert all(o["output_ids"] == first["output_ids"] for o in batch[:3])
    assert all(o["meta_info"]["cached_tokens"] > 0 for o in batch[:3])
    assert_idle_invariant(bf16_engine)


def test_bfloat16_burst_over_an_uncached_prefix_runs_in_one_batch_and_agrees(bf16_engine):
    """The AMX segment kernel reads a prefix that the same pass is writing: questions sharing
    an uncached few-shot prefix prefill together and answer as they do alone. (Without the
    kernel, PyTorch's attention merges the shared segment in bfloat16 steps that a lone request
    does not take, so answers agree only to rounding; the float32 engine tests the batching.)"""
    if bf16_engine.scheduler.runner.kernels.segment_attention is None:
        pytest.skip("the AMX segment kernel does not run here")
    shots = "".join(f"Q: {a} + {b} = ?\nA: {a + b}\n\n" for a, b in [(2, 3), (10, 7), (41, 1)])
    prompts = [shots + f"Q: {a} + {b} = ?\nA:" for a, b in [(4, 4), (15, 2), (30, 12)]]
    params = {"max_new_tokens": 6, "temperature": 0, "ignore_eos": True}
    alone = []
    for prompt in prompts:
        assert bf16_engine.flush_cache()
        alone.append(bf16_engine.generate(prompt, params)["output_ids"])
    assert bf16_engine.flush_cache()
    before = bf16_engine.stats()["prefill_batches"]
    outs = bf16_engine.generate(prompts, params)
    assert bf16_engine.stats()["prefill_batches"] - before == 1
    assert all(o["meta_info"]["cached_tokens"] > 20 for o in outs[1:])
    assert [o["output_ids"] for o in outs] == alone
    assert_idle_invariant(bf16_engine)


def _fused_and_plain(engine: Engine) -> dict[bool, list[dict]]:
    """Two prompts' greedy outputs with logprobs, with the fused decode step and without."""
    runner, scheduler = engine.scheduler.runner, engine.scheduler
    path = runner.fused_decode
    if path is None:
        pytest.skip("no fused bfloat16 decode step on this host (it needs AVX512-BF16)")
    prompts = ["The capital of France is", "Write a short poem about the sea."]
    params = {"max_new_tokens": 10, "temperature": 0, "ignore_eos": True}
    outs = {}
    try:
        for on in (True, False):
            switch = path if on else None
            scheduler.call(lambda s=switch: setattr(runner, "fused_decode", s)).result()
            assert engine.flush_cache()
            before = path.passes
            outs[on] = engine.generate(prompts, params, return_logprob=True)
            assert (path.passes > before) == on
    finally:
        scheduler.call(lambda: setattr(runner, "fused_decode", path)).result()
    return outs


def test_bfloat16_fused_decode_steps_are_bit_identical():
    """The fused decode step rounds where the per-operation path on the in-place attention
    kernel rounds: same logprobs, bit for bit (the float32 counterpart: test_fused_decode.py)."""
    with Engine(
        model="smollm2", dtype="bfloat16", kv_cache_tokens=4096, attention_backend="native"
    ) as engine:
        outs = _fused_and_plain(engine)
    for a, b in zip(outs[True], outs[False], strict=True):
        assert a["meta_info"]["output_token_logprobs"] == b["meta_info"]["output_token_logprobs"]


def test_bfloat16_fused_decode_beside_the_amx_executor(bf16_engine):
    """Where the engine attends on AMX (its segment kernel), narrow decode passes still run the
    fused step, whose attention rounds as the in-place kernel does: the same greedy tokens, and
    logprobs within bfloat16's rounding (a logit near 10 moves by ~0.04 at one ulp) of the
    per-operation AMX path's."""
    if bf16_engine.scheduler.runner.fused_planner is bf16_engine.scheduler.runner.planner:
        pytest.skip("the engine attends in place here: the test above covers it")
    outs = _fused_and_plain(bf16_engine)
    for a, b in zip(outs[True], outs[False], strict=True):
        assert a["output_ids"] == b["output_ids"]
        ours = torch.tensor([e[0] for e in a["meta_info"]["output_token_logprobs"]])
        plain = torch.tensor([e[0] for e in b["meta_info"]["output_token_logprobs"]])
        assert torch.allclose(ours, plain, atol=0.1), float((ours - plain).abs().max())


def test_bfloat16_speculation_changes_no_greedy_output(bf16_engine):
    """A verify pass rounds each of its tokens as a one-token decode step does (the 4-bit and
    8-bit kernels sum every row in one order), so n-gram speculation keeps bfloat16 greedy
    outputs token for token. This prompt's answer differed when a row's sums depended on the
    rows beside it."""
    from benchmarks.bench_decode import RAG_PROMPTS
    from radixgen.runtime.scheduler.speculative import Speculator

    scheduler = bf16_engine.scheduler
    # always the longest draft: many verify passes of several rows, whatever the acceptance
    config = bf16_engine.config.replace(
        speculative_algorithm="ngram", tune=("speculative_draft_cost_bfloat16=0",)
    )
    ids = bf16_engine.apply_chat_template(
        [{"role": "user", "content": RAG_PROMPTS["quote the answer"]}]
    )
    params = {"max_new_tokens": 96, "temperature": 0}
    assert bf16_engine.flush_cache()
    plain = bf16_engine.generate(ids, params)
    speculator = Speculator(config, bf16_engine.eos_ids)
    scheduler.call(lambda: setattr(scheduler, "speculator", speculator)).result()
    try:
        assert bf16_engine.flush_cache()
        spec = bf16_engine.generate(ids, params)
    finally:
        scheduler.call(lambda: setattr(scheduler, "speculator", None)).result()
    assert spec["meta_info"]["spec_accepted_tokens"] > 10
    assert spec["output_ids"] == plain["output_ids"]
