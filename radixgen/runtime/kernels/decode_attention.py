"""Attention that reads the KV pool in place (`decode_attention.c`).

The torch path gathers every request's K/V into a padded [B, Hkv, L, D] copy and runs flash
attention over it: the cache is read twice and written once, plus the padding to the longest
request, and long extends go one request at a time. This kernel reads each request's slots where
they lie: a decode step's token per request, or an extend's new tokens, each over its request's
KV up to itself, in blocks that read each K/V block once (register-tiled for float32). It serves
bfloat16 and float32 pools on the CPU; `EngineKernels` holds it only there, and where the
library builds.
"""

from __future__ import annotations

import ctypes

import torch

from radixgen.runtime.kernels.binding import Scalar, Signature, Tensor, bind

DTYPES = (torch.bfloat16, torch.float32)
_I64 = (torch.int64,)
_F32 = (torch.float32,)

SIGNATURES = (
    Signature(
        "decode_attention",
        "int",
        (
            Tensor("q", DTYPES, rank=2),
            Tensor("k", DTYPES, rank=3, same_dtype_as="q"),
            Tensor("v", DTYPES, rank=3, same_dtype_as="q"),
            Tensor("slots", _I64, rank=2),
            Tensor("token_rows", _I64, rank=1, optional=True),
            Tensor("lens", _I64, rank=1),
            Scalar("tokens", "int64"),
            Scalar("max_len", "int64"),
            Scalar("kv_heads", "int64"),
            Scalar("group", "int64"),
            Scalar("head_dim", "int64"),
            Scalar("block_tokens", "int64"),
            Scalar("scale", "float"),
            Scalar("is_f32", "int"),
            Scalar("num_threads", "int"),
            Tensor("out", _F32, rank=4),
            Tensor("lse", _F32, rank=3),
        ),
    ),
)


class DecodeAttentionKernel:
    def __init__(self, library: ctypes.CDLL, block_tokens: int):
        """`block_tokens`: consecutive new tokens of one request computed together, each K/V
        block read once for all of them (`Tuning.extend_block_tokens`)."""
        self._run = bind(library, SIGNATURES[0])
        self.block_tokens = block_tokens

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
        if lens.shape != (T,) or (token_rows is None and slots.shape[0] != T):
            raise ValueError(f"{T} query tokens need {T} lens and a slot row each")
        q = q.contiguous()
        slots, lens = slots.contiguous(), lens.contiguous()
        if token_rows is not None:
            token_rows = token_rows.contiguous()
        out = torch.empty(T, Hkv, G, D, dtype=torch.float32)
        lse = torch.empty(T, Hkv, G, dtype=torch.float32)
        status = self._run(
            q=q,
            k=k_buf,  # the pool's buffers are contiguous: the binding refuses a copy's cost
            v=v_buf,
            slots=slots,
            token_rows=token_rows,
            lens=lens,
            tokens=T,
            max_len=slots.shape[1],
            kv_heads=Hkv,
            group=G,
            head_dim=D,
            block_tokens=self.block_tokens,
            scale=D**-0.5,
            is_f32=q.dtype == torch.float32,
            num_threads=torch.get_num_threads(),
            out=out,
            lse=lse,
        )
        if status != 0:
            raise MemoryError("native decode kernel: no memory for its scratch buffers")
        return out, lse
