"""`ForwardBatch`: the one value the scheduler hands the model runner.

The scheduler fills every field; the runner and the attention planner only read them and never
look at scheduler state. Tokens of all requests are packed back to back ("flat" layout):

    input_ids   [ r0 new tokens | r1 new tokens | ... ]        T = sum(extend_lens)
    KV of r_b   [ prefix (cached, seq_len_b - extend_len_b) | new (extend_len_b) ]

In DECODE mode every request contributes exactly one token (extend_lens are all 1).

Image placeholder tokens have negative ids (see multimodal/image.py); `images` says which
encoder rows replace their embeddings: every negative id of `input_ids` is covered by exactly one
span, and a span may start or end inside an image (a prefill chunk boundary, a cached prefix).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from radixgen.runtime.multimodal import ImageInput


@dataclass(frozen=True)
class ImageSpan:
    """Rows [row, row + end - begin) of the flat token axis take the image's encoder rows
    [begin, end)."""

    image: ImageInput
    row: int
    begin: int
    end: int


class ForwardMode(enum.Enum):
    EXTEND = "extend"  # prefill of new tokens on top of a (possibly cached) prefix
    DECODE = "decode"  # one new token per request


@dataclass(frozen=True)
class ForwardBatch:
    mode: ForwardMode
    input_ids: torch.Tensor  # [T] int64: new tokens, flat
    positions: torch.Tensor  # [T] int64: position of each new token in its sequence
    out_cache_loc: torch.Tensor  # [T] int64: KV slot each new token's K/V is written to
    req_pool_indices: torch.Tensor  # [B] int64: rows of the req-to-token table
    seq_lens: torch.Tensor  # [B] int64: KV length of each request after this step
    extend_lens: torch.Tensor  # [B] int64: new tokens of each request
    logit_rows: torch.Tensor  # [R] int64: rows of the flat T axis whose logits are returned
    images: tuple[ImageSpan, ...] = ()  # where image features replace token embeddings

    @property
    def batch_size(self) -> int:
        return int(self.seq_lens.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])
