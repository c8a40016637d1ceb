"""Load a Llama-family model from a GGUF file.

Every quant type is dequantized to float32 by the `gguf` package, then tensors are renamed to the
Hugging Face names that `LlamaForCausalLM.load_weights` expects. llama.cpp's converter permutes the
rows of the q/k projections of Llama-architecture models (its rotary embedding rotates adjacent
pairs); we undo that permutation so the model runs the Hugging Face (rotate-half) rotary layout and
matches transformers bit for bit in float32.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from radixgen.runtime.config import ModelConfig

# llama.cpp architectures we can run, and whether their q/k rows are permuted in GGUF.
_ARCHS = {"llama": True, "mistral": True, "qwen2": False}

_LAYER_TENSORS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "rope_freqs.weight": "rope_freqs",
}
_LAYER_NAME = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


def _reader(path: Path):
    """The file's GGUFReader, shared by every load of the same unchanged file: parsing the
    metadata (49k vocabulary strings for SmolLM2) takes ~4 s, and an engine reads the file
    twice (config, then weights). The reader only memory-maps the file and is read-only."""
    stat = path.stat()
    return _cached_reader(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _cached_reader(path: str, mtime_ns: int, size: int):
    from gguf import GGUFReader

    return GGUFReader(path)


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def read_gguf_config(path: Path) -> ModelConfig:
    """Architecture hyper-parameters from the GGUF metadata."""
    reader = _reader(path)
    arch = _field(reader, "general.architecture")
    if arch not in _ARCHS:
        raise ValueError(f"unsupported GGUF architecture {arch!r} (supported: {sorted(_ARCHS)})")
    hidden = _field(reader, f"{arch}.embedding_length")
    num_heads = _field(reader, f"{arch}.attention.head_count")
    tensor_names = {t.name for t in reader.tensors}
    vocab = _field(reader, f"{arch}.vocab_size") or len(_field(reader, "tokenizer.ggml.tokens"))
    scaling = None
    if _field(reader, f"{arch}.rope.scaling.type") == "linear":
        scaling = {"rope_type": "linear", "factor": _field(reader, f"{arch}.rope.scaling.factor")}
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    return ModelConfig(
        architecture=arch,
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        intermediate_size=int(_field(reader, f"{arch}.feed_forward_length")),
        num_layers=int(_field(reader, f"{arch}.block_count")),
        num_heads=int(num_heads),
        num_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", num_heads)),
        head_dim=int(_field(reader, f"{arch}.rope.dimension_count", hidden // num_heads)),
        rope_theta=float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        rms_norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        max_position_embeddings=int(_field(reader, f"{arch}.context_length", 4096)),
        tie_word_embeddings="output.weight" not in tensor_names,
        attention_bias="blk.0.attn_q.bias" in tensor_names,
        rope_scaling=scaling,
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_ids=() if eos is None else (int(eos),),
    )


def _unpermute_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Invert llama.cpp's q/k row permutation (interleaved pairs -> rotate-half halves)."""
    rows = weight.shape[0]
    head_dim = rows // num_heads
    rest = weight.shape[1:]
    return weight.reshape(num_heads, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def iter_gguf_weights(path: Path, config: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (hf_name, float32 tensor) for every tensor in the file, dequantized."""
    from gguf.quants import dequantize

    reader = _reader(path)
    permuted = _ARCHS[config.architecture]
    for tensor in reader.tensors:
        array = dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
        match = _LAYER_NAME.fullmatch(tensor.name)
        if match:
            layer, kind, suffix = match.groups()
            if kind not in _LAYER_TENSORS:
                continue
            if permuted and kind in ("attn_q", "attn_k"):
                heads = config.num_heads if kind == "attn_q" else config.num_kv_heads
                array = _unpermute_rows(array, heads)
            name = f"model.layers.{layer}.{_LAYER_TENSORS[kind]}.{suffix}"
        elif tensor.name in _GLOBAL_TENSORS:
            name = _GLOBAL_TENSORS[tensor.name]
        else:
            continue
        yield name, torch.from_numpy(np.array(array, dtype=np.float32, order="C"))
