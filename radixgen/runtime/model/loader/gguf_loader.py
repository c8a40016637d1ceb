"""Load a Llama-family or Gemma 3 model from a GGUF file.

Every quant type is dequantized to float32 by the `gguf` package, then tensors are renamed to the
Hugging Face names that `LlamaForCausalLM.load_weights` expects. llama.cpp's converter permutes the
rows of the q/k projections of Llama-architecture models (its rotary embedding rotates adjacent
pairs); we undo that permutation so the model runs the Hugging Face (rotate-half) rotary layout and
matches transformers bit for bit in float32.

Gemma 3: llama.cpp stores Gemma's norm weights with their +1 folded in (Gemma scales by 1 + w);
we subtract it back, as transformers does, so every loader yields Hugging Face weights. The
layer pattern (every 6th layer global) and the sliding layers' rope base (10,000) are not in the
metadata: they are Gemma 3's published configuration, as transformers and llama.cpp assume.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from radixgen.runtime.config import ModelConfig
from radixgen.runtime.kernels.block_matmul import Int8Blocks
from radixgen.runtime.kernels.int4 import Int4Groups

# llama.cpp architectures we can run, and whether their q/k rows are permuted in GGUF.
_ARCHS = {"llama": True, "mistral": True, "qwen2": False, "gemma3": False}

# Gemma 3's published configuration, absent from its GGUF metadata.
GEMMA3_SLIDING_WINDOW_PATTERN = 6  # layers 5, 11, 17, ... are global
GEMMA3_ROPE_LOCAL_THETA = 10000.0

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
# Where Gemma 3 differs: four norms per layer, and QK-norm.
_GEMMA3_LAYER_TENSORS = {
    **_LAYER_TENSORS,
    "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
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
    num_layers = int(_field(reader, f"{arch}.block_count"))
    head_dim = _field(reader, f"{arch}.attention.key_length") or _field(
        reader, f"{arch}.rope.dimension_count", hidden // num_heads
    )
    gemma = {}
    if arch == "gemma3":
        pattern = GEMMA3_SLIDING_WINDOW_PATTERN
        gemma = dict(
            sliding_window=int(_field(reader, f"{arch}.attention.sliding_window")),
            layer_types=tuple(
                "full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                for i in range(num_layers)
            ),
            rope_local_theta=GEMMA3_ROPE_LOCAL_THETA,
            query_pre_attn_scalar=float(head_dim),
        )
    return ModelConfig(
        architecture=arch,
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        intermediate_size=int(_field(reader, f"{arch}.feed_forward_length")),
        num_layers=num_layers,
        num_heads=int(num_heads),
        num_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", num_heads)),
        head_dim=int(head_dim),
        rope_theta=float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        rms_norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        max_position_embeddings=int(_field(reader, f"{arch}.context_length", 4096)),
        tie_word_embeddings="output.weight" not in tensor_names,
        attention_bias="blk.0.attn_q.bias" in tensor_names,
        rope_scaling=scaling,
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_ids=() if eos is None else (int(eos),),
        **gemma,
    )


def _unpermute_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Invert llama.cpp's q/k row permutation (interleaved pairs -> rotate-half halves)."""
    rows = weight.shape[0]
    head_dim = rows // num_heads
    rest = weight.shape[1:]
    return weight.reshape(num_heads, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def _hf_name(tensor_name: str, config: ModelConfig) -> tuple[str | None, int | None]:
    """(Hugging Face name or None to skip, heads whose rows to unpermute or None)."""
    match = _LAYER_NAME.fullmatch(tensor_name)
    if match is None:
        return _GLOBAL_TENSORS.get(tensor_name), None
    layer, kind, suffix = match.groups()
    names = _GEMMA3_LAYER_TENSORS if config.architecture == "gemma3" else _LAYER_TENSORS
    if kind not in names:
        return None, None
    heads = None
    if _ARCHS[config.architecture] and kind in ("attn_q", "attn_k"):
        heads = config.num_heads if kind == "attn_q" else config.num_kv_heads
    return f"model.layers.{layer}.{names[kind]}.{suffix}", heads


def iter_gguf_weights(path: Path, config: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (hf_name, float32 tensor) for every tensor in the file, dequantized."""
    from gguf.quants import dequantize

    for tensor in _reader(path).tensors:
        name, heads = _hf_name(tensor.name, config)
        if name is None:
            continue
        array = dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
        if heads is not None:
            array = _unpermute_rows(array, heads)
        if config.architecture == "gemma3" and name.endswith("norm.weight"):
            array = array - np.float32(1.0)  # llama.cpp folded Gemma's 1 + w into the weight
        yield name, torch.from_numpy(np.array(array, dtype=np.float32, order="C"))


def iter_gguf_int4(path: Path, config: ModelConfig) -> Iterator[tuple[str, Int4Groups]]:
    """Yield (hf_name, codes/scales/zeros) for every Q4_0 / Q4_1 tensor, as stored (no
    dequantization): the blocks of 32 inputs are exactly `Int4Groups`' groups."""
    from gguf import GGMLQuantizationType

    for tensor in _reader(path).tensors:
        kind = tensor.tensor_type
        if kind not in (GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1):
            continue
        name, heads = _hf_name(tensor.name, config)
        if name is None:
            continue
        has_min = kind is GGMLQuantizationType.Q4_1
        codes, scales, zeros = _q4_blocks(np.asarray(tensor.data), has_min)
        if heads is not None:
            codes, scales, zeros = (_unpermute_rows(a, heads) for a in (codes, scales, zeros))
        yield (
            name,
            Int4Groups(
                torch.from_numpy(np.ascontiguousarray(codes)),
                torch.from_numpy(np.ascontiguousarray(scales)),
                torch.from_numpy(np.ascontiguousarray(zeros)),
            ),
        )


def _q4_blocks(raw: np.ndarray, has_min: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split Q4 rows ([N, blocks * bytes] uint8) into codes [N, K] uint8 and per-block scales and
    zeros [N, blocks] float32 with w = (code - 8) * scale + zero.

    Block layout (ggml): Q4_0 = d (f16), 16 bytes of codes, w = d * (code - 8);
    Q4_1 = d (f16), m (f16), 16 bytes of codes, w = d * code + m. Byte j of a block holds code j
    in its low nibble and code j + 16 in its high nibble.
    """
    header = 4 if has_min else 2
    rows = raw.shape[0]
    blocks = raw.reshape(rows, -1, header + 16)  # [N, B, bytes]
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)  # [N, B]
    packed = blocks[..., header:]  # [N, B, 16]
    codes = np.concatenate((packed & 0x0F, packed >> 4), axis=-1).reshape(rows, -1)  # [N, K]
    if has_min:
        m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        return codes, d, m + 8 * d
    return codes, d, np.zeros_like(d)


def iter_gguf_int8(path: Path, config: ModelConfig) -> Iterator[tuple[str, Int8Blocks]]:
    """Yield (hf_name, codes/scales) for every Q8_0 tensor, as stored (no dequantization)."""
    from gguf import GGMLQuantizationType

    for tensor in _reader(path).tensors:
        if tensor.tensor_type is not GGMLQuantizationType.Q8_0:
            continue
        name, heads = _hf_name(tensor.name, config)
        if name is None:
            continue
        codes, scales = _q8_0_blocks(np.asarray(tensor.data))
        if heads is not None:
            codes, scales = _unpermute_rows(codes, heads), _unpermute_rows(scales, heads)
        yield (
            name,
            Int8Blocks(
                torch.from_numpy(np.ascontiguousarray(codes)),
                torch.from_numpy(np.ascontiguousarray(scales)),
            ),
        )


def _q8_0_blocks(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split Q8_0 rows ([N, blocks * 34] uint8) into codes [N, K] int8 and per-block scales
    [N, blocks] float32 with w = code * scale. Block layout (ggml): d (f16), 32 int8 codes."""
    rows = raw.shape[0]
    blocks = raw.reshape(rows, -1, 2 + 32)  # [N, B, bytes]
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)  # [N, B]
    codes = blocks[..., 2:].copy().view(np.int8).reshape(rows, -1)  # [N, K]
    return codes, d
