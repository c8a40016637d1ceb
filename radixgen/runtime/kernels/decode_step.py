"""A narrow forward pass of a Llama-family decoder in one native call (`decode_step.c`).

On a small model a decode step is hundreds of operations of a few microseconds each; their
Python dispatch costs about as much as their work. `DecodeStepKernel` runs every layer's norms,
4-bit projections, rotary embedding, K/V store and in-place attention, and the final norm, from
C, with the very kernels and roundings of the per-operation path (bit-identical results).

The weights are described once, as a `LayerTable`: a row per layer of data addresses
(`LAYER_FIELDS`, in the C source's order; the `_half` columns are flags). The table holds the
tensors it points into, so they live as long as it does. It needs the 4-bit matmul of the
activation dtype: bfloat16 on CPUs with AVX512-BF16, float32 on CPUs with AVX2.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from radixgen.runtime.kernels.bf16_block_matmul import PANEL_COLS, Bf16Int4Panels
from radixgen.runtime.kernels.binding import Scalar, Signature, Tensor, bind
from radixgen.runtime.kernels.block_matmul import Int4Panels

# The columns of a layer table row, as the C enum names them (lower case).
LAYER_FIELDS = (
    "qkv_codes",
    "qkv_scales",
    "qkv_shifts",
    "qkv_half",
    "qkv_bias",
    "o_codes",
    "o_scales",
    "o_shifts",
    "o_half",
    "gate_up_codes",
    "gate_up_scales",
    "gate_up_shifts",
    "gate_up_half",
    "down_codes",
    "down_scales",
    "down_shifts",
    "down_half",
    "input_norm",
    "post_attention_norm",
)

DTYPES = (torch.bfloat16, torch.float32)
_I64 = (torch.int64,)

SIGNATURES = (
    Signature("decode_step_layer_fields", "int", ()),
    Signature("decode_step_available", "int", (Scalar("is_f32", "int"),)),
    Signature(
        "decode_step",
        "int",
        (
            Tensor("layers", _I64, rank=2),
            Scalar("num_layers", "int64"),
            Tensor("x", DTYPES, rank=2),
            Tensor("cos", DTYPES, rank=2, same_dtype_as="x"),
            Tensor("sin", DTYPES, rank=2, same_dtype_as="x"),
            Tensor("k_pool", DTYPES, rank=4, same_dtype_as="x"),
            Tensor("v_pool", DTYPES, rank=4, same_dtype_as="x"),
            Scalar("pool_slots", "int64"),
            Tensor("out_cache_loc", _I64, rank=1),
            Tensor("slots", _I64, rank=2),
            Tensor("token_rows", _I64, rank=1, optional=True),
            Tensor("lens", _I64, rank=1),
            Scalar("max_len", "int64"),
            Scalar("rows", "int64"),
            Scalar("hidden", "int64"),
            Scalar("heads", "int64"),
            Scalar("kv_heads", "int64"),
            Scalar("head_dim", "int64"),
            Scalar("inter", "int64"),
            Scalar("eps", "float"),
            Scalar("scale", "float"),
            Scalar("block_tokens", "int64"),
            Scalar("is_f32", "int"),
            Scalar("num_threads", "int"),
            Tensor("final_norm", DTYPES, rank=1, same_dtype_as="x"),
            Tensor("out", DTYPES, rank=2, same_dtype_as="x"),
        ),
    ),
)

Int4Weight = Bf16Int4Panels | Int4Panels


@dataclass(frozen=True)
class LayerWeights:
    """One decoder layer as the fused step reads it."""

    qkv: Int4Weight  # [q | k | v] rows
    qkv_bias: torch.Tensor | None  # [q + 2 kv] in the activation dtype (Qwen2), or None
    o: Int4Weight
    gate_up: Int4Weight  # [gate | up] rows
    down: Int4Weight
    input_norm: torch.Tensor  # [hidden]
    post_attention_norm: torch.Tensor  # [hidden]


def _shifts(weight: Int4Weight) -> torch.Tensor:
    return weight.mins if isinstance(weight, Bf16Int4Panels) else weight.zeros


def _half(weight: Int4Weight) -> int:
    """The table's flag (not an address): 1 where the scales and mins are float16."""
    return int(isinstance(weight, Bf16Int4Panels) and weight.half)


def _padded_cols(weight: Int4Weight) -> int:
    rows_per_panel = PANEL_COLS if isinstance(weight, Bf16Int4Panels) else PANEL_COLS // 2
    return weight.codes.shape[0] * rows_per_panel


class LayerTable:
    """Every layer's addresses ([layers, LAYER_FIELDS] int64), and the tensors behind them."""

    def __init__(self, layers: list[LayerWeights]):
        rows, self._alive = [], []
        for layer in layers:
            row = []
            for weight in (layer.qkv, layer.o, layer.gate_up, layer.down):
                if _padded_cols(weight) != weight.cols:
                    raise ValueError(f"a {weight.cols}-column weight is padded: not fused")
            for name in LAYER_FIELDS:
                part, _, kind = name.rpartition("_")
                if kind == "half":
                    row.append(_half(getattr(layer, part)))
                    continue
                if kind in ("codes", "scales", "shifts"):
                    weight = getattr(layer, part)
                    tensor = _shifts(weight) if kind == "shifts" else getattr(weight, kind)
                else:
                    tensor = getattr(layer, name)
                if tensor is not None and not tensor.is_contiguous():
                    raise ValueError(f"{name} must be contiguous")
                row.append(0 if tensor is None else tensor.data_ptr())
                self._alive.append(tensor)
            rows.append(row)
        self.addresses = torch.tensor(rows, dtype=torch.int64)  # [layers, LAYER_FIELDS]


class DecodeStepKernel:
    """The fused pass; `available(dtype)` says whether this build serves that dtype."""

    def __init__(self, library: ctypes.CDLL, block_tokens: int):
        """`block_tokens`: as `DecodeAttentionKernel`'s (`Tuning.extend_block_tokens`)."""
        if bind(library, SIGNATURES[0])() != len(LAYER_FIELDS):
            raise RuntimeError("decode_step.c and decode_step.py disagree on the layer table")
        self._available = bind(library, SIGNATURES[1])
        self._run = bind(library, SIGNATURES[2])
        self.block_tokens = block_tokens

    def available(self, dtype: torch.dtype) -> bool:
        return dtype in DTYPES and bool(self._available(is_f32=dtype == torch.float32))

    def __call__(
        self,
        table: LayerTable,
        x: torch.Tensor,  # [T, hidden]: the token embeddings
        cos: torch.Tensor,  # [T, D]
        sin: torch.Tensor,  # [T, D]
        k_pool: torch.Tensor,  # [layers, S, Hkv, D]
        v_pool: torch.Tensor,  # [layers, S, Hkv, D]
        out_cache_loc: torch.Tensor,  # [T] int64
        slots: torch.Tensor,  # [R, L] int64: each attention problem's slots
        lens: torch.Tensor,  # [T] int64: slots each token sees
        token_rows: torch.Tensor | None,  # [T] int64 problem of each token (None: token t)
        final_norm: torch.Tensor,  # [hidden]
        heads: int,
        intermediate: int,
        eps: float,
    ) -> torch.Tensor:  # [T, hidden]: the final norm of the residual stream
        T, hidden = x.shape
        num_layers, _, kv_heads, head_dim = k_pool.shape
        if table.addresses.shape[0] != num_layers:
            raise ValueError(f"{table.addresses.shape[0]} layers of weights, {num_layers} of KV")
        if out_cache_loc.shape != (T,) or lens.shape != (T,) or cos.shape != (T, head_dim):
            raise ValueError(f"{T} tokens need {T} cache slots, lens and rotary angles each")
        out = torch.empty_like(x)
        status = self._run(
            layers=table.addresses,
            num_layers=num_layers,
            x=x,
            cos=cos,
            sin=sin,
            k_pool=k_pool,
            v_pool=v_pool,
            pool_slots=k_pool.shape[1],
            out_cache_loc=out_cache_loc,
            slots=slots,
            token_rows=token_rows,
            lens=lens,
            max_len=slots.shape[1],
            rows=T,
            hidden=hidden,
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            inter=intermediate,
            eps=eps,
            scale=head_dim**-0.5,
            block_tokens=self.block_tokens,
            is_f32=x.dtype == torch.float32,
            num_threads=torch.get_num_threads(),
            final_norm=final_norm,
            out=out,
        )
        if status == -1:
            raise ValueError("fused decode step: a projection's shape does not fit its input")
        if status != 0:
            raise MemoryError("fused decode step: no memory for its scratch buffers")
        return out
