"""`TokenMasker`: forbid, in one batch's logits, every token a request's grammar does not allow.

Per step, for the constrained rows only: llguidance fills one bit per vocabulary token (in
parallel over requests, off the GIL), the bits are unpacked into a boolean mask (one table lookup
per byte; bit b of little-endian word j is token 32*j + b) and the forbidden logits set to -inf.
Unconstrained rows in the same batch are untouched. Logits wider than the tokenizer's vocabulary
(padded embedding rows) are always forbidden for constrained rows.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import torch

from radixgen.runtime.constrained.grammar import Grammar

BITS = 32
assert sys.byteorder == "little", "the bitmask byte view assumes a little-endian host"
# BYTE_BITS[byte] = its 8 bits, least significant first: [256, 8] bool
BYTE_BITS = ((torch.arange(256)[:, None] >> torch.arange(8)) & 1).bool()


class TokenMasker:
    def __init__(self, tokenizer_vocab: int):
        self.tokenizer_vocab = tokenizer_vocab
        self.words = (tokenizer_vocab + BITS - 1) // BITS
        self._executor = None
        self.seconds = 0.0  # time spent computing and applying masks (for stats)

    def apply(self, logits: torch.Tensor, grammars: Sequence[Grammar | None]) -> None:
        """In place on logits [B, V]: -inf where row i's grammar forbids the token.
        Rows whose grammar is None, finished or in error are left as they are."""
        rows = [i for i, g in enumerate(grammars) if g is not None and not g.matcher.is_stopped()]
        if not rows:
            return
        started = time.perf_counter()
        bitmask = torch.zeros(len(rows), self.words, dtype=torch.int32)  # [C, W]
        self._fill(bitmask, [grammars[i] for i in rows])
        # [C, W] int32 -> [C, 4W] bytes (little-endian) -> [C, 4W, 8] bits -> [C, 32W]
        allowed = BYTE_BITS[bitmask.view(torch.uint8).long()].view(len(rows), -1)
        vocab = logits.shape[1]
        width = min(vocab, allowed.shape[1])
        index = torch.tensor(rows)
        masked = logits[index]  # [C, V]
        masked[:, :width].masked_fill_(~allowed[:, :width], float("-inf"))
        masked[:, width:] = float("-inf")
        # A grammar that errored while computing its mask allows nothing: leave its row
        # unmasked; the scheduler aborts that request with the grammar's error.
        healthy = [j for j, i in enumerate(rows) if grammars[i].error is None]
        if len(healthy) == len(rows):
            logits[index] = masked
        elif healthy:
            keep = torch.tensor(healthy)
            logits[index[keep]] = masked[keep]
        self.seconds += time.perf_counter() - started

    def _fill(self, bitmask: torch.Tensor, grammars: list[Grammar]) -> None:
        """Row i of bitmask [C, W] (contiguous int32) <- grammars[i]'s allowed tokens.
        (llguidance's own torch helpers import torch.compile machinery; its raw pointer API
        needs nothing but a contiguous buffer.)"""
        row_bytes = self.words * 4
        if len(grammars) == 1:
            grammars[0].matcher.unsafe_compute_mask_ptr(bitmask.data_ptr(), row_bytes)
            return
        if self._executor is None:
            from llguidance import LLExecutor

            self._executor = LLExecutor()
        self._executor.unsafe_compute_mask_ptr(
            [(g.matcher, i) for i, g in enumerate(grammars)],
            bitmask.data_ptr(),
            row_bytes,
            len(grammars),
        )
