"""Attention that reads the KV pool in place (native kernel `kernels/decode_attention.c`).

The torch path gathers every request's K/V into a padded [B, Hkv, L, D] copy and runs flash
attention over it: the cache is read twice and written once, plus the padding to the longest
request, and long extends go one request at a time. This kernel reads each request's slots where
they lie: a decode step's token per request, or an extend's new tokens, each over its request's
KV up to itself, in blocks that read each K/V block once (register-tiled for float32). It serves
bfloat16 and float32 pools on the CPU; `load_decode_attention` returns None elsewhere or when
native kernels are unavailable (see `native.py`), and the caller keeps the torch path.
"""

from __future__ import annotations

import ctypes

import torch

from radixgen.runtime.model.native import load_kernel

_i64, _ptr = ctypes.c_int64, ctypes.c_void_p
DTYPES = (torch.bfloat16, torch.float32)


# Consecutive new tokens of one request computed together (each K/V block read once for them).
EXTEND_BLOCK_TOKENS = 16


class DecodeAttentionKernel:
    def __init__(self, library: ctypes.PyDLL):
        self._run = library.decode_attention
        self._run.restype = ctypes.c_int
        self._run.argtypes = [_ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _i64, _i64, _i64, _i64, _i64]
        self._run.argtypes += [_i64, ctypes.c_float, ctypes.c_int, ctypes.c_int, _ptr, _ptr]

    def __call__(
        self,
        q: torch.Tensor,  # [T, Hkv*G*D] bfloat16 or float32: G query rows per KV head
        k_buf: torch.Tensor,  # [S, Hkv, D] q's dtype, one layer of the pool
        v_buf: torch.Tensor,  # [S, Hkv, D]
        slots: torch.Tensor,  # [R, L] int64: the KV slots of each request, in order
        lens: torch.Tensor,  # [T] int64: how many of its row's slots each token sees
        token_rows: torch.Tensor | None = None,  # [T] int64 row of each token (None: row t)
    ) -> tuple[torch.Tensor, torch.Tensor]:  # out [T, Hkv, G, D], lse [T, Hkv, G] float32
        """Each token's queries against the first lens[t] slots of its row: softmax(q k^T /
        sqrt(D)) v, with the log-sum-exp for merging with other key segments. A decoding
        request's G rows are its GQA group (any G works: the queries of several requests over
        one prefix, say). An extend's new tokens share their request's row, each with its own
        length (causal); runs of them are computed in blocks. A token that sees no slots gets
        lse -1e30 (its weight vanishes in a merge) and zero output."""
        Hkv, D = k_buf.shape[1:]
        T = q.shape[0]
        G = q.shape[1] // (Hkv * D)
        tensors = (q, k_buf, v_buf)
        if q.dtype not in DTYPES or any(
            t.dtype != q.dtype or t.device.type != "cpu" for t in tensors
        ):
            raise ValueError(
                "the native decode kernel takes bfloat16 or float32 CPU tensors of one dtype"
            )
        if lens.shape != (T,) or (token_rows is None and slots.shape[0] != T):
            raise ValueError(f"{T} query tokens need {T} lens and a slot row each")
        q = q.contiguous()
        slots, lens = slots.contiguous(), lens.contiguous()
        if token_rows is not None:
            token_rows = token_rows.contiguous()
        if not (k_buf.is_contiguous() and v_buf.is_contiguous()):
            raise ValueError("the KV pool buffers must be contiguous")
        out = torch.empty(T, Hkv, G, D, dtype=torch.float32)
        lse = torch.empty(T, Hkv, G, dtype=torch.float32)
        status = self._run(
            q.data_ptr(),
            k_buf.data_ptr(),
            v_buf.data_ptr(),
            slots.data_ptr(),
            None if token_rows is None else token_rows.data_ptr(),
            lens.data_ptr(),
            T,
            slots.shape[1],
            Hkv,
            G,
            D,
            EXTEND_BLOCK_TOKENS,
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
