"""Attention of query tokens over KV segments on AMX tiles (`segment_attention.c`).

One call takes a list of *problems*, each a set of query tokens and a list of KV slots read in
place from the pool: the common prefix a group of requests shares, or one request's own part
(causal: each of its new tokens sees a prefix of the list). The problems of one call have
disjoint tokens; a later call merges into the earlier result by log-sum-exp (`accumulate`).

`load_segment_attention` returns None where the kernel cannot run (no AMX, not bfloat16 on the
CPU, head_dim other than 64, the library does not build); `EngineKernels` then holds None and
the caller keeps the torch backend.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from radixgen.runtime.kernels.binding import Scalar, Signature, Tensor, bind

HEAD_DIM = 64  # the only head size the kernel's tiles are laid out for


def _offsets(lengths: Sequence[int]) -> torch.Tensor:
    """[P + 1] int64: where each of P consecutive runs of `lengths` starts, then the total."""
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    if lengths:
        torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0, out=offsets[1:])
    return offsets


@dataclass(frozen=True)
class SegmentProblems:
    """The problems of one kernel call, flattened (problem p owns entries offsets[p]:[p + 1])."""

    token_offsets: torch.Tensor  # [P + 1]
    tokens: torch.Tensor  # [N] flat token rows of q / out
    limits: torch.Tensor | None  # [N] slots visible to each token (a prefix); None: all
    slot_offsets: torch.Tensor  # [P + 1]
    slots: torch.Tensor  # [M] KV pool slots

    @staticmethod
    def build(
        tokens: Sequence[torch.Tensor],  # per problem: [n_p] token rows
        slots: Sequence[torch.Tensor],  # per problem: [m_p] slots
        limits: Sequence[torch.Tensor] | None = None,  # per problem: [n_p] visible slots
    ) -> SegmentProblems:
        return SegmentProblems(
            _offsets([len(t) for t in tokens]),
            torch.cat(list(tokens)).to(torch.int64).contiguous(),
            None if limits is None else torch.cat(list(limits)).to(torch.int64).contiguous(),
            _offsets([len(s) for s in slots]),
            torch.cat(list(slots)).to(torch.int64).contiguous(),
        )


_BF16, _I64, _F32 = (torch.bfloat16,), (torch.int64,), (torch.float32,)

SIGNATURES = (
    Signature("segment_attention_init", "int", ()),
    Signature(
        "segment_attention_bf16",
        "int",
        (
            Tensor("q", _BF16, rank=2, layout="rows"),
            Scalar("q_row_stride", "int64"),
            Tensor("k", _BF16, rank=3),
            Tensor("v", _BF16, rank=3),
            Scalar("num_problems", "int64"),
            Tensor("token_offsets", _I64, rank=1),
            Tensor("tokens", _I64, rank=1),
            Tensor("limits", _I64, rank=1, optional=True),
            Tensor("slot_offsets", _I64, rank=1),
            Tensor("slots", _I64, rank=1),
            Scalar("kv_heads", "int64"),
            Scalar("group", "int64"),
            Scalar("head_dim", "int64"),
            Scalar("scale", "float"),
            Scalar("accumulate", "int"),
            Scalar("num_threads", "int"),
            Tensor("out", _F32, rank=4),
            Tensor("lse", _F32, rank=3),
        ),
    ),
)


class SegmentAttentionKernel:
    def __init__(self, library: ctypes.CDLL):
        self._run = bind(library, SIGNATURES[1])

    def __call__(
        self,
        q: torch.Tensor,  # [T, Hkv*G*D] bfloat16; rows may be strided (a slice of fused QKV)
        k_buf: torch.Tensor,  # [S, Hkv, D] bfloat16, one layer of the pool
        v_buf: torch.Tensor,  # [S, Hkv, D]
        problems: SegmentProblems,
        out: torch.Tensor,  # [T, Hkv, G, D] float32, written (or merged into)
        lse: torch.Tensor,  # [T, Hkv, G] float32
        accumulate: bool = False,
    ) -> None:
        """softmax(q k^T / sqrt(D)) v of every problem's tokens over its slots, into out/lse.

        Without `accumulate`, every token of `out` must belong to some problem (the others are
        left as they were). A token that sees no slot gets out 0 and lse -1e30 (or, with
        `accumulate`, keeps its values)."""
        Hkv, D = k_buf.shape[1:]
        G = q.shape[1] // (Hkv * D)
        status = self._run(
            q=q,
            q_row_stride=q.stride(0),
            k=k_buf,
            v=v_buf,
            num_problems=len(problems.token_offsets) - 1,
            token_offsets=problems.token_offsets,
            tokens=problems.tokens,
            limits=problems.limits,
            slot_offsets=problems.slot_offsets,
            slots=problems.slots,
            kv_heads=Hkv,
            group=G,
            head_dim=D,
            scale=D**-0.5,
            accumulate=int(accumulate),
            num_threads=torch.get_num_threads(),
            out=out,
            lse=lse,
        )
        if status != 0:
            raise ValueError(f"segment attention kernel failed (status {status}, head_dim {D})")


def load_segment_attention(
    library: ctypes.CDLL | None, dtype: torch.dtype, head_dim: int
) -> SegmentAttentionKernel | None:
    """The kernel where it can serve a CPU pool of `dtype` and heads of `head_dim` with
    `library` (the built segment_attention.c, None if it did not build), or None."""
    if library is None or dtype != torch.bfloat16 or head_dim != HEAD_DIM:
        return None
    if bind(library, SIGNATURES[0])() != 0:  # no AMX in this build or for this process
        return None
    return SegmentAttentionKernel(library)
