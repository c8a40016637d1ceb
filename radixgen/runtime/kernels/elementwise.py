"""Fused element-wise steps of a decoder layer (`elementwise.c`).

A layer runs ~30 element-wise torch operators besides its matmuls (residual adds, RMSNorm's
float32 round trip, SiLU and the gate product, rotary's negate/concatenate/multiply/add), each a
pass over memory and a thread-pool wake-up; on a small model and few cores that is a large share
of a forward pass (docs/kernels.md). `FusedOps` runs each chain as one native call over bfloat16
or float32 CPU tensors, rounding where the torch chain rounds (see the C source); for any other
dtype or device, or without the library (`FusedOps(None)`), each method runs the torch chain
itself, so callers never branch.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch
import torch.nn.functional as F

from radixgen.runtime.kernels.binding import Scalar, Signature, Tensor, bind

_SUFFIXES = {torch.bfloat16: "bf16", torch.float32: "f32"}


def _signatures(suffix: str, dtype: torch.dtype) -> tuple[Signature, ...]:
    """The three entry points of one element type (`*_bf16`, `*_f32`)."""
    floats = (dtype,)
    threads = Scalar("num_threads", "int")
    return (
        Signature(
            f"add_rms_norm_{suffix}",
            "void",
            (
                Tensor("x", floats, rank=2),
                Tensor("delta", floats, rank=2, optional=True),
                Tensor("weight", floats, rank=1),
                Scalar("rows", "int64"),
                Scalar("dim", "int64"),
                Scalar("eps", "float"),
                threads,
                Tensor("sum_out", floats, rank=2),
                Tensor("out", floats, rank=2),
            ),
        ),
        Signature(
            f"silu_mul_{suffix}",
            "void",
            (
                Tensor("gate_up", floats, rank=2),
                Scalar("rows", "int64"),
                Scalar("inter", "int64"),
                threads,
                Tensor("out", floats, rank=2),
            ),
        ),
        Signature(
            f"rotary_{suffix}",
            "void",
            (
                Tensor("x", floats, rank=3, layout="rows"),
                Scalar("rows", "int64"),
                Scalar("row_stride", "int64"),
                Scalar("heads", "int64"),
                Scalar("head_dim", "int64"),
                Tensor("cos", floats, rank=3),
                Tensor("sin", floats, rank=3),
                threads,
            ),
        ),
    )


SIGNATURES = tuple(s for dtype, suffix in _SUFFIXES.items() for s in _signatures(suffix, dtype))


def _suffix(*tensors: torch.Tensor) -> str | None:
    """The kernel variant serving these tensors ("bf16", "f32"), or None (torch chain)."""
    dtype = tensors[0].dtype
    if any(t.dtype != dtype or not t.is_cpu for t in tensors):
        return None
    return _SUFFIXES.get(dtype)


class FusedOps:
    """Residual add + RMSNorm, SiLU·mul and in-place rotary; native when given the library."""

    def __init__(self, library: ctypes.CDLL | None):
        self._library = library
        self._entry: dict[str, Callable[..., None]] = {}
        if library is not None:
            self._entry = {s.name: bind(library, s) for s in SIGNATURES}

    @property
    def is_native(self) -> bool:
        return self._library is not None

    def add_rms_norm(
        self,
        x: torch.Tensor,  # [T, hidden]
        delta: torch.Tensor | None,  # [T, hidden], added to x first (the residual stream)
        weight: torch.Tensor,  # [hidden]
        eps: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # normed [T, hidden], x + delta (or x)
        """transformers' LlamaRMSNorm of x + delta: normalise in float32, scale in x's dtype."""
        tensors = (x, weight) if delta is None else (x, delta, weight)
        suffix = _suffix(*tensors)
        if self._library is None or suffix is None:
            total = x if delta is None else x + delta
            normed = F.rms_norm(total.float(), (total.shape[-1],), eps=eps).to(total.dtype)
            return weight * normed, total
        x, weight = x.contiguous(), weight.contiguous()
        rows, dim = x.shape
        out = torch.empty_like(x)
        total = x if delta is None else torch.empty_like(x)
        delta = None if delta is None else delta.contiguous()
        self._entry[f"add_rms_norm_{suffix}"](
            x=x,
            delta=delta,
            weight=weight,
            rows=rows,
            dim=dim,
            eps=eps,
            num_threads=torch.get_num_threads(),
            sum_out=total,
            out=out,
        )
        return out, total

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:  # [T, 2I] -> [T, I]
        """SiLU(gate) * up for the merged [gate | up] projection."""
        suffix = _suffix(gate_up)
        if self._library is None or suffix is None:
            gate, up = gate_up.chunk(2, dim=-1)
            return F.silu(gate) * up
        gate_up = gate_up.contiguous()
        rows, width = gate_up.shape
        out = gate_up.new_empty(rows, width // 2)
        self._entry[f"silu_mul_{suffix}"](
            gate_up=gate_up,
            rows=rows,
            inter=width // 2,
            num_threads=torch.get_num_threads(),
            out=out,
        )
        return out

    def rotary_(
        self,
        x: torch.Tensor,  # [T, heads, D], rows may be strided (a column slice of qkv)
        cos: torch.Tensor,  # [T, 1, D]
        sin: torch.Tensor,  # [T, 1, D]
    ) -> torch.Tensor:
        """Rotate-half rotary embedding of x in place; returns x."""
        T, heads, D = x.shape
        packed_heads = x.stride(2) == 1 and x.stride(1) == D
        suffix = _suffix(x, cos, sin)
        if self._library is None or suffix is None or not packed_heads:
            half = D // 2
            rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
            return x.copy_(x * cos + rotated * sin)
        cos, sin = cos.contiguous(), sin.contiguous()
        self._entry[f"rotary_{suffix}"](
            x=x,
            rows=T,
            row_stride=x.stride(0),
            heads=heads,
            head_dim=D,
            cos=cos,
            sin=sin,
            num_threads=torch.get_num_threads(),
        )
        return x
