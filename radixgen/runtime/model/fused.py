"""Fused element-wise steps of a decoder layer (native kernel `kernels/elementwise.c`).

A layer runs ~30 element-wise torch operators besides its matmuls (residual adds, RMSNorm's
float32 round trip, SiLU and the gate product, rotary's negate/concatenate/multiply/add), each a
pass over memory and a thread-pool wake-up. On 2 cores that is ~25% of a prefill and ~20% of a
decode step. `FusedOps` runs each chain as one native call over bfloat16 or float32 CPU tensors,
rounding where the torch chain rounds (see the C source); for any other dtype or device, or
without native kernels, each method runs the torch chain itself, so callers never branch.
"""

from __future__ import annotations

import ctypes
import functools

import torch
import torch.nn.functional as F

from radixgen.runtime.model.native import load_kernel

_i64, _ptr, _int, _float = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_float


_SUFFIXES = {torch.bfloat16: "bf16", torch.float32: "f32"}


def _suffix(*tensors: torch.Tensor) -> str | None:
    """The kernel variant serving these tensors ("bf16", "f32"), or None (torch chain)."""
    dtype = tensors[0].dtype
    if any(t.dtype != dtype or t.device.type != "cpu" for t in tensors):
        return None
    return _SUFFIXES.get(dtype)


class FusedOps:
    """Residual add + RMSNorm, SiLU·mul and in-place rotary; native when the library loaded."""

    def __init__(self, library: ctypes.PyDLL | None):
        self._library = library
        if library is None:
            return
        for suffix in _SUFFIXES.values():
            add_rms_norm = getattr(library, f"add_rms_norm_{suffix}")
            add_rms_norm.restype = None
            add_rms_norm.argtypes = [_ptr, _ptr, _ptr, _i64, _i64, _float, _int, _ptr, _ptr]
            silu_mul = getattr(library, f"silu_mul_{suffix}")
            silu_mul.restype = None
            silu_mul.argtypes = [_ptr, _i64, _i64, _int, _ptr]
            rotary = getattr(library, f"rotary_{suffix}")
            rotary.restype = None
            rotary.argtypes = [_ptr, _i64, _i64, _i64, _i64, _ptr, _ptr, _int]

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
        delta_ptr = None if delta is None else delta.contiguous().data_ptr()
        getattr(self._library, f"add_rms_norm_{suffix}")(
            x.data_ptr(),
            delta_ptr,
            weight.data_ptr(),
            rows,
            dim,
            eps,
            torch.get_num_threads(),
            total.data_ptr(),
            out.data_ptr(),
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
        getattr(self._library, f"silu_mul_{suffix}")(
            gate_up.data_ptr(), rows, width // 2, torch.get_num_threads(), out.data_ptr()
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
        getattr(self._library, f"rotary_{suffix}")(
            x.data_ptr(),
            T,
            x.stride(0),
            heads,
            D,
            cos.data_ptr(),
            sin.data_ptr(),
            torch.get_num_threads(),
        )
        return x


@functools.cache
def fused_ops() -> FusedOps:
    """The process's fused operators (native where the kernel builds)."""
    return FusedOps(load_kernel("elementwise"))
