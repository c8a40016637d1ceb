"""Gemma 3 270M computes what transformers computes (float32, same dequantized GGUF weights),
through its sliding-window layers (window 512), whatever the cache, batching or chunking does.

Prompts run from 5 to ~1,500 tokens, half of them past the window, so local layers attend to a
window that slides inside the prompt, across prefill chunks (the engine chunks at 256 tokens)
and during decoding. Greedy outputs are checked by teacher forcing, as in test_exactness.py:
at every generated position our token must be transformers' argmax, unless transformers' top
two are a near-tie (then the sequences part and the comparison stops).

Cost: the two models load once per session (~30-45 s and ~60 s); transformers runs one forward
per prompt, through its output head only at the rows compared; generations are 12 tokens.
"""

from __future__ import annotations

import pytest
import torch

from tests.engine.gemma3_cases import NEW_TOKENS, PROMPTS, WINDOW, greedy

TIE_TOLERANCE = 1e-4


def _reference_logprobs(hf_model, ids: list[int], rows: int) -> torch.Tensor:  # [rows, V]
    """transformers' logprobs of the token after each of the last `rows` positions of `ids`
    (only those rows go through its 262k-wide output head)."""
    with torch.no_grad():
        logits = hf_model(torch.tensor([ids]), logits_to_keep=rows).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def _assert_matches_reference(hf_model, prompt_ids: list[int], generated: list[int]) -> None:
    ref = _reference_logprobs(hf_model, prompt_ids + generated, len(generated) + 1)
    for step, token in enumerate(generated):
        row = ref[step]  # the position before generated[step]
        best = int(row.argmax())
        if token != best:
            top2 = row.topk(2).values
            gap = float(top2[0] - top2[1])
            assert gap <= TIE_TOLERANCE, (
                f"diverged at step {step} of a {len(prompt_ids)}-token prompt: ours {token}, "
                f"reference {best}, reference top-2 gap {gap:.2e} is not a near-tie"
            )
            return


def test_the_gguf_reads_as_gemma3s_published_configuration(gemma_engine):
    cfg = gemma_engine.model_config
    assert (cfg.architecture, cfg.num_layers, cfg.hidden_size) == ("gemma3", 18, 640)
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (4, 1, 256)
    assert (cfg.sliding_window, cfg.rope_theta, cfg.rope_local_theta) == (WINDOW, 1e6, 1e4)
    assert [i for i, kind in enumerate(cfg.layer_types) if kind == "full_attention"] == [5, 11, 17]
    assert cfg.tie_word_embeddings and cfg.vocab_size == 262144


def test_prompts_span_5_to_1500_tokens_and_cross_the_window(gemma_engine):
    lengths = [len(gemma_engine.tokenizer(p)["input_ids"]) for p in PROMPTS]
    assert min(lengths) <= 8 and 1300 <= max(lengths) <= 1600, lengths
    assert sum(n > WINDOW for n in lengths) >= 4, lengths


def test_greedy_matches_transformers(gemma_engine, gemma_hf_model, gemma_cold_outputs):
    for prompt, generated in zip(PROMPTS, gemma_cold_outputs, strict=True):
        assert len(generated) == NEW_TOKENS
        ids = gemma_engine.tokenizer(prompt)["input_ids"]
        _assert_matches_reference(gemma_hf_model, ids, generated)


def test_cached_and_batched_runs_give_the_same_tokens(gemma_engine, gemma_cold_outputs):
    """Every prompt again, all in one batch: each now reuses its cached prompt from the radix
    tree (local layers included) and decodes beside the others."""
    assert greedy(gemma_engine, PROMPTS) == gemma_cold_outputs


def test_a_cached_prefix_past_the_window_with_a_new_suffix(gemma_engine, gemma_hf_model):
    """A new question after a cached 1,500-token prompt: the extend starts ~1,000 tokens past
    the window's first position, so local layers must ignore most of the cached KV."""
    prompt = PROMPTS[-1].rsplit(" The value", 1)[0] + " The value of key 11 is"
    greedy(gemma_engine, [PROMPTS[-1]])  # make sure the long prefix is cached
    generated = greedy(gemma_engine, [prompt])[0]
    ids = gemma_engine.tokenizer(prompt)["input_ids"]
    _assert_matches_reference(gemma_hf_model, ids, generated)


LOGPROB_ROWS = 160  # the last prompt positions whose logprobs are compared


@pytest.mark.parametrize("index", [0, 7])
def test_prompt_logprobs_match_transformers(gemma_engine, gemma_hf_model, index):
    """The last LOGPROB_ROWS positions of a short prompt and of the ~1,450-token one (all of
    them ~900 tokens past the window's start)."""
    ids = gemma_engine.tokenizer(PROMPTS[index])["input_ids"]
    start = max(0, len(ids) - LOGPROB_ROWS)
    out = gemma_engine.generate(
        input_ids=ids,
        sampling_params={"max_new_tokens": 1, "temperature": 0},
        return_logprob=True,
        logprob_start_len=start,
    )
    entries = out["meta_info"]["input_token_logprobs"]
    assert [e[1] for e in entries] == ids[start:]
    ours = torch.tensor([e[0] for e in entries if e[0] is not None])  # [n]
    ref = _reference_logprobs(gemma_hf_model, ids, len(ours) + 1)[:-1]  # [n, V]
    expected = ref[torch.arange(len(ours)), torch.tensor(ids[len(ids) - len(ours) :])]
    assert torch.allclose(ours, expected, atol=1e-3), float((ours - expected).abs().max())
