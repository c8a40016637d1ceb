"""The engine computes what transformers computes, on the same dequantized weights (float32).

Greedy outputs are checked by teacher forcing: our prompt + output goes through transformers in
one forward; at every generated position our token must be transformers' argmax. The first
position where they differ is accepted only if transformers' top two logprobs there are within
1e-4 (a near-tie that float rounding may flip), and comparison stops there (the sequences part).
"""

from __future__ import annotations

import pytest
import torch

NEW_TOKENS = 64
TIE_TOLERANCE = 1e-4

_STORY = (
    "In the spring of that year the village council met in the old granary to decide what to do "
    "about the bridge. The river had risen twice since the winter, and each time the water had "
    "carried away another plank. Marta, who kept the mill, argued that a stone bridge would last "
    "a hundred years; the blacksmith said iron was cheaper and could be built before the harvest. "
)


def _prompts(tokenizer) -> list[str]:
    chat = lambda messages: tokenizer.apply_chat_template(  # noqa: E731
        messages, tokenize=False, add_generation_prompt=True
    )
    long_text = " ".join(_STORY for _ in range(6))  # ~500 tokens
    return [
        "The capital of France is",
        chat([{"role": "user", "content": "What is the capital of France?"}]),
        chat(
            [
                {"role": "system", "content": "You answer in one short sentence."},
                {"role": "user", "content": "Name a primary colour."},
                {"role": "assistant", "content": "Red is a primary colour."},
                {"role": "user", "content": "Name another one."},
            ]
        ),
        "def fibonacci(n):\n",
        long_text,
        chat([{"role": "user", "content": "Summarise this story:\n" + " ".join([_STORY] * 3)}]),
        "Shopping list:\n1. apples\n2. bananas\n3.",
        "Le café est très bon. Über die Brücke gehen wir. 日本語のテキスト。",
        chat([{"role": "user", "content": "Write a haiku about the sea."}]),
        '{"name": "Alice", "age": 30, "city": ',
    ]


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return _prompts(tokenizer)


def _reference_logprobs(hf_model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = hf_model(torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)  # [len(ids), V]


def test_prompt_lengths_span_5_to_500_tokens(prompts, tokenizer):
    lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    assert len(prompts) >= 10
    assert min(lengths) <= 8 and 400 <= max(lengths) <= 520, lengths


def test_greedy_matches_transformers(engine, hf_model, prompts):
    outs = engine.generate(
        prompts, {"max_new_tokens": NEW_TOKENS, "temperature": 0, "ignore_eos": True}
    )
    for prompt, out in zip(prompts, outs, strict=True):
        prompt_ids = engine.tokenizer(prompt)["input_ids"]
        generated = out["output_ids"]
        assert len(generated) == NEW_TOKENS
        ref = _reference_logprobs(hf_model, prompt_ids + generated)
        for step, token in enumerate(generated):
            row = ref[len(prompt_ids) + step - 1]
            best = int(row.argmax())
            if token != best:
                top2 = row.topk(2).values
                gap = float(top2[0] - top2[1])
                assert gap <= TIE_TOLERANCE, (
                    f"diverged at step {step} of {prompt[:40]!r}: ours {token}, reference {best}, "
                    f"reference top-2 gap {gap:.2e} is not a near-tie"
                )
                break


def test_prompt_logprobs_match_transformers(engine, hf_model, prompts):
    for prompt in prompts[:6]:
        out = engine.generate(
            prompt,
            {"max_new_tokens": 1, "temperature": 0},
            return_logprob=True,
            logprob_start_len=0,
        )
        ids = engine.tokenizer(prompt)["input_ids"]
        entries = out["meta_info"]["input_token_logprobs"]
        assert len(entries) == len(ids)
        assert entries[0][0] is None and entries[0][1] == ids[0]
        ref = _reference_logprobs(hf_model, ids)
        expected = ref[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
        ours = torch.tensor([e[0] for e in entries[1:]])
        assert [e[1] for e in entries[1:]] == ids[1:]
        assert torch.allclose(ours, expected, atol=1e-3), float((ours - expected).abs().max())
        # The first output token's logprob too.
        lp, token, _ = out["meta_info"]["output_token_logprobs"][0]
        assert abs(lp - float(ref[-1, token])) < 1e-3
