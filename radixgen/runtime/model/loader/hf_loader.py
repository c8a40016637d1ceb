"""Load a model from a Hugging Face directory (config.json + safetensors): the Llama family,
Qwen3 and Gemma 3 (text).

LLaVA-1.5-style directories (`LlavaForConditionalGeneration`, the llava-hf layout) load as their
language model (`text_config`, a Llama) plus a `VisionConfig` for the CLIP tower and projector;
transformers' `LlavaConfig` fills the defaults those configs leave out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

from radixgen.runtime.config import ModelConfig, VisionConfig

_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma3ForCausalLM": "gemma3",
}
_MULTIMODAL = "LlavaForConditionalGeneration"
_VISION_SELECT_STRATEGIES = ("default", "full")


def read_hf_config(directory: Path) -> ModelConfig:
    """Architecture hyper-parameters from config.json (and generation_config.json for EOS)."""
    cfg = json.loads((directory / "config.json").read_text())
    names = cfg.get("architectures") or []
    if _MULTIMODAL in names:
        return _read_llava_config(directory)
    arch = next((_ARCHITECTURES[n] for n in names if n in _ARCHITECTURES), None)
    if arch is None:
        raise ValueError(
            f"unsupported architectures {names} in {directory}/config.json "
            f"(supported: {sorted([*_ARCHITECTURES, _MULTIMODAL])})"
        )
    return _text_config(cfg, arch, directory)


def _text_config(cfg: dict, arch: str, directory: Path, vision: VisionConfig | None = None):
    eos = cfg.get("eos_token_id")
    gen_path = directory / "generation_config.json"
    if gen_path.exists():
        eos = json.loads(gen_path.read_text()).get("eos_token_id", eos)
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
    num_heads = cfg["num_attention_heads"]
    if cfg.get("use_sliding_window"):  # Qwen2/Qwen3 flag, off in their released checkpoints
        raise ValueError(f"{directory}: use_sliding_window is not supported for {arch}")
    extra = _gemma3_fields(cfg) if arch == "gemma3" else {}
    default_theta = 1_000_000.0 if arch == "gemma3" else 10000.0  # config.json names none
    # transformers < 5 writes `rope_theta` and `rope_scaling` at the top level; transformers >= 5
    # writes one `rope_parameters` dict holding `rope_theta` and the scaling fields.
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    if arch == "gemma3":  # one rope per layer type; the global layers' is the main one
        rope = dict((cfg.get("rope_parameters") or {}).get("full_attention") or {})
        rope.update(cfg.get("rope_scaling") or {})
    rope_theta = cfg.get("rope_theta") or rope.get("rope_theta")
    return ModelConfig(
        architecture=arch,
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=cfg.get("num_key_value_heads") or num_heads,
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // num_heads,
        rope_theta=float(rope_theta or default_theta),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=cfg.get("max_position_embeddings", 4096),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", arch == "gemma3")),
        attention_bias=arch == "qwen2" or bool(cfg.get("attention_bias", False)),
        rope_scaling=rope or None,
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_ids=tuple(int(e) for e in eos_ids),
        **extra,
        vision=vision,
    )


# Gemma 3's defaults where a config.json omits them (transformers' Gemma3TextConfig).
_GEMMA3_DEFAULTS = {"sliding_window_pattern": 6, "rope_local_base_freq": 10000.0}


def _gemma3_fields(cfg: dict) -> dict:
    """Gemma 3's ModelConfig fields: the layer types (listed, or every `sliding_window_pattern`-th
    layer global), the window, the sliding layers' rope base and the attention scale."""
    for name in ("final_logit_softcapping", "attn_logit_softcapping"):
        if cfg.get(name) is not None:
            raise ValueError(f"Gemma 3 with {name} is not supported")
    if cfg.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        raise ValueError(f"Gemma 3 with hidden_activation {cfg['hidden_activation']!r}")
    layers = cfg["num_hidden_layers"]
    types = cfg.get("layer_types")
    if not types:
        pattern = cfg.get("sliding_window_pattern") or _GEMMA3_DEFAULTS["sliding_window_pattern"]
        types = [
            "full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
            for i in range(layers)
        ]
    local = ((cfg.get("rope_parameters") or {}).get("sliding_attention") or {}).get("rope_theta")
    num_heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // num_heads
    return dict(
        sliding_window=cfg.get("sliding_window"),
        layer_types=tuple(types),
        rope_local_theta=float(
            local or cfg.get("rope_local_base_freq") or _GEMMA3_DEFAULTS["rope_local_base_freq"]
        ),
        query_pre_attn_scalar=float(cfg.get("query_pre_attn_scalar") or head_dim),
    )


def _read_llava_config(directory: Path) -> ModelConfig:
    """A llava-hf directory: the text model's config with the vision path attached."""
    from transformers import LlavaConfig

    full = LlavaConfig.from_pretrained(str(directory)).to_dict()
    text, tower = full["text_config"], full["vision_config"]
    if text.get("model_type") not in ("llama", "mistral", "qwen2"):
        raise ValueError(f"unsupported LLaVA language model {text.get('model_type')!r}")
    if tower.get("model_type") != "clip_vision_model":
        raise ValueError(f"unsupported LLaVA vision tower {tower.get('model_type')!r}")
    strategy = full.get("vision_feature_select_strategy", "default")
    if strategy not in _VISION_SELECT_STRATEGIES:
        raise ValueError(f"unsupported vision_feature_select_strategy {strategy!r}")
    layer = full.get("vision_feature_layer", -2)
    image_token = full.get("image_token_id", full.get("image_token_index"))
    vision = VisionConfig(
        hidden_size=tower["hidden_size"],
        intermediate_size=tower["intermediate_size"],
        num_layers=tower["num_hidden_layers"],
        num_heads=tower["num_attention_heads"],
        image_size=tower["image_size"],
        patch_size=tower["patch_size"],
        num_channels=tower.get("num_channels", 3),
        layer_norm_eps=float(tower.get("layer_norm_eps", 1e-5)),
        hidden_act=tower.get("hidden_act", "quick_gelu"),
        feature_layers=(layer,) if isinstance(layer, int) else tuple(layer),
        select_strategy=strategy,
        projector_act=full.get("projector_hidden_act", "gelu"),
        projector_bias=bool(full.get("multimodal_projector_bias", True)),
        image_token_id=int(image_token),
    )
    return _text_config(text, text["model_type"], directory, vision)


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
