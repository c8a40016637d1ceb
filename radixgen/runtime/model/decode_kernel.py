"""Decode attention that reads the KV pool in place (native kernel `kernels/decode_attention.c`).

The torch path of a decode step gathers every request's K/V into a padded [B, Hkv, L, D] copy
and runs flash attention over it: the cache is read twice and written once, plus the padding to
the longest request. This kernel reads each request's slots where they lie, once. It serves
bfloat16 and float32 pools on the CPU; `load_decode_attention` returns None elsewhere or when
native kernels are unavailable (see `native.py`), and the caller keeps the torch path.
"""

from __future__ import annotations

import ctypes

import torch

from radixgen.runtime.model.native import load_kernel

_i64, _ptr = ctypes.c_int64, ctypes.c_void_p
DTYPES = (torch.bfloat16, torch.float32)


class DecodeAttentionKernel:
    def __init__(self, library: ctypes.PyDLL):
        self._run = library.decode_attention
        self._run.restype = ctypes.c_int
        self._run.argtypes = [_ptr, _ptr, _ptr, _ptr, _ptr, _i64, _i64, _i64, _i64, _i64]
        self._run.argtypes += [ctypes.c_float, ctypes.c_int, ctypes.c_int, _ptr, _ptr]

    def __call__(
        self,
        q: torch.Tensor,  # [B, Hkv*G*D] bfloat16 or float32: G query rows per KV head
        k_buf: torch.Tensor,  # [S, Hkv, D] q's dtype, one layer of the pool
        v_buf: torch.Tensor,  # [S, Hkv, D]
        slots: torch.Tensor,  # [B, L] int64; row b's first lens[b] entries are its own KV
        lens: torch.Tensor,  # [B] int64
    ) -> tuple[torch.Tensor, torch.Tensor]:  # out [B, Hkv, G, D], lse [B, Hkv, G] float32
        """Each request's queries against its slots: softmax(q k^T / sqrt(D)) v, with the
        log-sum-exp for merging with other key segments. A decoding request's G rows are its
        GQA group; any G works (the queries of several requests over one prefix, say), but with
        many rows gather + flash attention is faster, so the engine sends decode steps and
        extends of a few tokens per request (one row per new token, its own lens). A
        request with no slots gets lse -1e30 (its weight vanishes in a merge) and zero output."""
        Hkv, D = k_buf.shape[1:]
        B, L = slots.shape
        G = q.shape[1] // (Hkv * D)
        tensors = (q, k_buf, v_buf)
        if q.dtype not in DTYPES or any(
            t.dtype != q.dtype or t.device.type != "cpu" for t in tensors
        ):
            raise ValueError(
                "the native decode kernel takes bfloat16 or float32 CPU tensors of one dtype"
            )
        q = q.contiguous()
        slots, lens = slots.contiguous(), lens.contiguous()
        if not (k_buf.is_contiguous() and v_buf.is_contiguous()):
            raise ValueError("the KV pool buffers must be contiguous")
        out = torch.empty(B, Hkv, G, D, dtype=torch.float32)
        lse = torch.empty(B, Hkv, G, dtype=torch.float32)
        status = self._run(
            q.data_ptr(),
            k_buf.data_ptr(),
            v_buf.data_ptr(),
            slots.data_ptr(),
            lens.data_ptr(),
            B,
            L,
            Hkv,
            G,
            D,
            D**-0.5,
            q.dtype == torch.float32,
            torch.get_num_threads(),
            out.data_ptr(),
            lse.data_ptr(),
        )
        if status != 0:
            raise MemoryError("native decode kernel: no memory for its scratch buffers")
        return out, lse


def load_decode_attention(device: torch.device, dtype: torch.dtype) -> DecodeAttentionKernel | None:
    """The kernel for a pool of `dtype` on `device`, or None (use torch)."""
    if device.type != "cpu" or dtype not in DTYPES:
        return None
    library = load_kernel("decode_attention")
    return None if library is None else DecodeAttentionKernel(library)
