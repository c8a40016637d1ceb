"""Loading Hugging Face model directories (config.json + safetensors + tokenizer files).

Tiny randomly initialised Llama, Qwen2, Qwen3 and Gemma 3 models are written locally with
transformers (no network): untied and tied embeddings, llama3 rope scaling (in both config.json
layouts: the `rope_parameters` dict transformers 5 writes, and the top-level `rope_theta` +
`rope_scaling` of checkpoints saved by transformers 4), Qwen2 q/k/v biases, Qwen3's QK-norm,
and Gemma 3's sliding-window layers (a window of 8, which every prompt but the shortest
crosses). For each, a radixgen `Engine` on the directory must match transformers' own model on
the same files: greedy continuations token for token (a divergence is allowed only where the
reference's top-2 logits tie within `TIE_TOL`), and prompt logprobs within `LOGPROB_TOL`.

The weights are re-initialised with a larger spread than transformers' default (std 0.02 gives
near-uniform logits, where greedy decoding would be decided by float noise), and the biases and
norm weights are made non-trivial so a mis-loaded tensor changes the output.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from radixgen import Engine
from radixgen.runtime.model.loader import resolve_model
from radixgen.runtime.model.loader.hf_loader import read_hf_config

MAX_NEW = 16
TIE_TOL = 1e-4
LOGPROB_TOL = 1e-4
PROMPT_LENS = (5, 12, 23, 40)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Radix trees share prompt prefixes between requests.",
    "Hello world, this is a tiny tokenizer for tests.",
    "Continuous batching keeps every core busy while requests arrive.",
]

_COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # GQA
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
)

_LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # With head_dim 16 and theta 5e5 the wavelengths fall in all three llama3 bands (kept,
    # smoothed, divided by `factor`), so a missed scaling changes attention at these positions.
    "original_max_position_embeddings": 64,
}

CASES: dict[str, dict[str, Any]] = {
    "llama": dict(arch="llama", tie_word_embeddings=False),
    "llama_tied": dict(arch="llama", tie_word_embeddings=True, num_hidden_layers=3),
    "llama3_rope": dict(
        arch="llama", tie_word_embeddings=False, rope_theta=500000.0, rope_scaling=_LLAMA3_ROPE
    ),
    "llama3_rope_legacy_config": dict(
        arch="llama",
        tie_word_embeddings=False,
        rope_theta=500000.0,
        rope_scaling=_LLAMA3_ROPE,
        legacy_config=True,
    ),
    "qwen2": dict(arch="qwen2", tie_word_embeddings=False, rope_theta=1000000.0),
    # Qwen3: QK-norm (its own config default head_dim is 128: keep the common 16).
    "qwen3": dict(arch="qwen3", tie_word_embeddings=False, rope_theta=1000000.0, head_dim=16),
    # Gemma 3: two sliding-window layers (window 8, so every prompt but the first and every
    # generation slide past it) around a global one, each kind with its rope base; an attention
    # scale that is not head_dim's; Gemma's norms, GELU MLP and scaled tied embeddings.
    "gemma3": dict(
        arch="gemma3",
        tie_word_embeddings=True,
        num_hidden_layers=3,
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        query_pre_attn_scalar=24,
        rope_theta=1000000.0,
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
    ),
}
_NOT_CONFIG = ("arch", "legacy_config")  # CASES keys that are not transformers config kwargs


@dataclass
class Tiny:
    name: str
    path: Path
    hf: Any  # the transformers model, float32, eval
    engine: Engine
    prompts: list[list[int]]


@pytest.fixture(scope="module")
def hf_tokenizer():
    """A byte-level BPE tokenizer trained on a few sentences, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


_HF_CLASSES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
}


def _build_hf_model(case: dict[str, Any], vocab_size: int):
    import transformers

    # transformers edits a rope_scaling dict in place (adds rope_theta): give it a copy.
    kwargs = copy.deepcopy({**_COMMON, **{k: v for k, v in case.items() if k not in _NOT_CONFIG}})
    if case["arch"] == "gemma3":
        kwargs.pop("rope_theta")  # in rope_parameters
    config_cls, model_cls = _HF_CLASSES[case["arch"]]
    config = getattr(transformers, config_cls)(vocab_size=vocab_size, **kwargs)
    model_cls = getattr(transformers, model_cls)
    config.bos_token_id = config.eos_token_id = 0
    model = model_cls(config).float().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():  # tied weights appear once
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            elif name.endswith(".bias"):
                param.normal_(0.0, 0.5)
            else:
                param.normal_(0.0, 0.1)
    return model


def _write_legacy_rope_config(path: Path) -> None:
    """Rewrite config.json the way transformers 4 saved it: `rope_theta` and `rope_scaling` at
    the top level instead of one `rope_parameters` dict."""
    cfg = json.loads((path / "config.json").read_text())
    rope = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = None if rope.get("rope_type") == "default" else rope
    (path / "config.json").write_text(json.dumps(cfg, indent=2))


@pytest.fixture(scope="module", params=list(CASES))
def tiny(request, tmp_path_factory, hf_tokenizer):
    name = request.param
    case = CASES[name]
    torch.manual_seed(1234)
    model = _build_hf_model(case, len(hf_tokenizer))
    path = tmp_path_factory.mktemp(f"hf_{name}")
    model.save_pretrained(str(path))  # safetensors
    hf_tokenizer.save_pretrained(str(path))
    if case.get("legacy_config"):
        _write_legacy_rope_config(path)
    rng = random.Random(name)
    prompts = [[rng.randrange(len(hf_tokenizer)) for _ in range(n)] for n in PROMPT_LENS]
    prompts.append(prompts[-1][:30] + prompts[0])  # shares a cached prefix with the 40-token one
    engine = Engine(model=str(path), dtype="float32", kv_cache_tokens=4096, max_running_requests=8)
    try:
        yield Tiny(name, path, model, engine, prompts)
    finally:
        engine.shutdown()


def test_fixture_has_the_intended_checkpoint(tiny):
    """Guard the fixtures themselves: the files hold what each case means to cover."""
    from safetensors.torch import load_file

    tensors = load_file(str(tiny.path / "model.safetensors"))
    case = CASES[tiny.name]
    assert ("lm_head.weight" in tensors) == (not case["tie_word_embeddings"])
    assert "model.layers.0.self_attn.q_proj.weight" in tensors  # unmerged HF names
    assert "model.layers.0.mlp.gate_proj.weight" in tensors
    if case["arch"] == "qwen2":
        for proj in ("q_proj", "k_proj", "v_proj"):
            assert tensors[f"model.layers.0.self_attn.{proj}.bias"].abs().min() > 0
    assert (tiny.path / "tokenizer.json").exists()
    config = json.loads((tiny.path / "config.json").read_text())
    assert ("rope_parameters" in config) == (not case.get("legacy_config"))


def test_read_hf_config(tiny):
    source = resolve_model(str(tiny.path))
    assert source.format == "hf"
    cfg = read_hf_config(tiny.path)
    hf = tiny.hf.config
    case = CASES[tiny.name]
    assert cfg.architecture == case["arch"]
    assert cfg.vocab_size == hf.vocab_size
    assert (cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (
        hf.num_hidden_layers,
        4,
        2,
        16,
    )
    assert cfg.tie_word_embeddings == case["tie_word_embeddings"]
    assert cfg.attention_bias == (case["arch"] == "qwen2")
    assert cfg.rope_theta == case.get("rope_theta", 10000.0)
    scaling = cfg.rope_scaling or {}
    if "rope_scaling" in case:
        assert {k: scaling.get(k) for k in _LLAMA3_ROPE} == _LLAMA3_ROPE
    else:
        assert scaling.get("rope_type", scaling.get("type", "default")) == "default"
    if case["arch"] == "gemma3":
        assert cfg.sliding_window == 8 and cfg.layer_types == tuple(case["layer_types"])
        assert (cfg.rope_local_theta, cfg.query_pre_attn_scalar) == (10000.0, 24.0)
    else:
        assert not cfg.has_sliding_layers


def test_tokenizer_loaded_from_directory(tiny, hf_tokenizer):
    text = "Hello world, the quick brown fox."
    ids = hf_tokenizer(text)["input_ids"]
    assert tiny.engine.tokenizer(text)["input_ids"] == ids
    out = tiny.engine.generate(text, {"max_new_tokens": 4, "temperature": 0, "ignore_eos": True})
    assert out["meta_info"]["prompt_tokens"] == len(ids)
    assert len(out["output_ids"]) == 4
    assert out["text"] == hf_tokenizer.decode(out["output_ids"])


def _hf_greedy(model, prompt: list[int]) -> tuple[list[int], list[torch.Tensor]]:
    """transformers' greedy continuation (EOS never stops it) and its per-step logits."""
    from transformers import GenerationConfig

    gen = GenerationConfig(
        do_sample=False,
        max_new_tokens=MAX_NEW,
        min_new_tokens=0,
        eos_token_id=None,
        pad_token_id=0,
        output_logits=True,
        return_dict_in_generate=True,
    )
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), generation_config=gen)
    new = out.sequences[0, len(prompt) :].tolist()
    assert len(new) == MAX_NEW
    return new, [step[0].float() for step in out.logits]


def test_greedy_matches_transformers(tiny):
    outs = tiny.engine.generate(
        input_ids=tiny.prompts,
        sampling_params={"max_new_tokens": MAX_NEW, "temperature": 0, "ignore_eos": True},
    )
    for prompt, out in zip(tiny.prompts, outs, strict=True):
        ours = out["output_ids"]
        assert len(ours) == MAX_NEW
        ref, logits = _hf_greedy(tiny.hf, prompt)
        diverged = next((i for i, (a, b) in enumerate(zip(ours, ref, strict=True)) if a != b), None)
        if diverged is None:
            continue
        top2 = logits[diverged].topk(2)
        gap = float(top2.values[0] - top2.values[1])
        assert gap <= TIE_TOL and ours[diverged] in top2.indices.tolist(), (
            f"{tiny.name}: prompt of {len(prompt)} tokens diverges at step {diverged} "
            f"(ours {ours[diverged]}, transformers {ref[diverged]}, top-2 gap {gap:.3g})\n"
            f"ours {ours}\nref  {ref}"
        )


def test_prompt_logprobs_match_transformers(tiny):
    outs = tiny.engine.generate(
        input_ids=tiny.prompts,
        sampling_params={"max_new_tokens": 1, "temperature": 0, "ignore_eos": True},
        return_logprob=True,
        logprob_start_len=0,
    )
    for prompt, out in zip(tiny.prompts, outs, strict=True):
        triples = out["meta_info"]["input_token_logprobs"]
        assert [t[1] for t in triples] == prompt
        assert triples[0][0] is None
        with torch.no_grad():
            logits = tiny.hf(torch.tensor([prompt])).logits[0].float()
        ref = torch.log_softmax(logits, dim=-1)[:-1].gather(1, torch.tensor(prompt[1:])[:, None])
        ours = torch.tensor([t[0] for t in triples[1:]], dtype=torch.float32)
        torch.testing.assert_close(ours, ref[:, 0], atol=LOGPROB_TOL, rtol=0, msg=tiny.name)
