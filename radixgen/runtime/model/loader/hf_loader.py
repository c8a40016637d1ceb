"""Load a Llama-family model from a Hugging Face directory (config.json + safetensors)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

from radixgen.runtime.config import ModelConfig

_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
}


def read_hf_config(directory: Path) -> ModelConfig:
    """Architecture hyper-parameters from config.json (and generation_config.json for EOS)."""
    cfg = json.loads((directory / "config.json").read_text())
    names = cfg.get("architectures") or []
    arch = next((_ARCHITECTURES[n] for n in names if n in _ARCHITECTURES), None)
    if arch is None:
        raise ValueError(
            f"unsupported architectures {names} in {directory}/config.json "
            f"(supported: {sorted(_ARCHITECTURES)})"
        )
    eos = cfg.get("eos_token_id")
    gen_path = directory / "generation_config.json"
    if gen_path.exists():
        eos = json.loads(gen_path.read_text()).get("eos_token_id", eos)
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
    num_heads = cfg["num_attention_heads"]
    # transformers < 5 writes `rope_theta` and `rope_scaling` at the top level; transformers >= 5
    # writes one `rope_parameters` dict holding `rope_theta` and the scaling fields.
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    rope_theta = cfg.get("rope_theta") or rope.get("rope_theta") or 10000.0
    return ModelConfig(
        architecture=arch,
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=cfg.get("num_key_value_heads") or num_heads,
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // num_heads,
        rope_theta=float(rope_theta),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=cfg.get("max_position_embeddings", 4096),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attention_bias=arch == "qwen2" or bool(cfg.get("attention_bias", False)),
        rope_scaling=rope or None,
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_ids=tuple(int(e) for e in eos_ids),
    )


def iter_hf_weights(directory: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) from every *.safetensors file (or pytorch_model*.bin)."""
    files = sorted(directory.glob("*.safetensors"))
    if files:
        from safetensors.torch import load_file

        for path in files:
            yield from load_file(str(path)).items()
        return
    bins = sorted(directory.glob("pytorch_model*.bin"))
    if not bins:
        raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin in {directory}")
    for path in bins:
        yield from torch.load(path, map_location="cpu", weights_only=True).items()
