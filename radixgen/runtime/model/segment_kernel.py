"""Attention of query tokens over KV segments on AMX tiles (native kernel
`kernels/segment_attention.c`).

One call takes a list of *problems*, each a set of query tokens and a list of KV slots read in
place from the pool: the common prefix a group of requests shares, or one request's own part
(causal: each of its new tokens sees a prefix of the list). The problems of one call have
disjoint tokens; a later call merges into the earlier result by log-sum-exp (`accumulate`).

`load_segment_attention` returns None where the kernel cannot run (no AMX, not bfloat16 on the
CPU, head_dim other than 64, native kernels unavailable); the caller keeps the torch backend.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from radixgen.runtime.model.native import load_kernel

_i64, _ptr = ctypes.c_int64, ctypes.c_void_p
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


class SegmentAttentionKernel:
    def __init__(self, library: ctypes.PyDLL):
        self._run = library.segment_attention_bf16
        self._run.restype = ctypes.c_int
        self._run.argtypes = [_ptr, _i64, _ptr, _ptr, _i64] + [_ptr] * 5 + [_i64] * 3
        self._run.argtypes += [ctypes.c_float, ctypes.c_int, ctypes.c_int, _ptr, _ptr]

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
        tensors = (q, k_buf, v_buf)
        if any(t.dtype != torch.bfloat16 or t.device.type != "cpu" for t in tensors):
            raise ValueError("the segment attention kernel takes bfloat16 CPU tensors")
        if q.stride(1) != 1 or not all(t.is_contiguous() for t in (k_buf, v_buf, out, lse)):
            raise ValueError("the segment attention kernel takes contiguous tensors (q: rows)")
        limits = problems.limits
        status = self._run(
            q.data_ptr(),
            q.stride(0),
            k_buf.data_ptr(),
            v_buf.data_ptr(),
            len(problems.token_offsets) - 1,
            problems.token_offsets.data_ptr(),
            problems.tokens.data_ptr(),
            None if limits is None else limits.data_ptr(),
            problems.slot_offsets.data_ptr(),
            problems.slots.data_ptr(),
            Hkv,
            G,
            D,
            D**-0.5,
            int(accumulate),
            torch.get_num_threads(),
            out.data_ptr(),
            lse.data_ptr(),
        )
        if status != 0:
            raise ValueError(f"segment attention kernel failed (status {status}, head_dim {D})")


def load_segment_attention(
    device: torch.device, dtype: torch.dtype, head_dim: int
) -> SegmentAttentionKernel | None:
    """The kernel where it can serve a pool of `dtype` on `device`, or None (use torch)."""
    if device.type != "cpu" or dtype != torch.bfloat16 or head_dim != HEAD_DIM:
        return None
    library = load_kernel("segment_attention")
    if library is None or library.segment_attention_init() != 0:
        return None
    return SegmentAttentionKernel(library)
