"""A request's whole life inside the scheduler: its tokens, its KV regions and its outputs.

Token regions of a request (`fill_ids` = prompt + generated tokens):

    fill_ids  [ prefix: KV from the radix tree | own KV: computed for this request | pending ]
              0                          cached_len                            kv_len      len

`prefix` slots belong to the tree and are protected by locking `last_node`; `own` slots were
allocated for this request. `pending` tokens have no KV yet: the rest of a chunked prompt, or the
last sampled token, whose KV the next decode step computes.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from radixgen.runtime.cache.radix_cache import TreeNode
from radixgen.runtime.detokenizer import IncrementalDetokenizer
from radixgen.runtime.multimodal.image import PromptImage
from radixgen.runtime.sampling_params import SamplingParams

if TYPE_CHECKING:
    from radixgen.runtime.constrained import Grammar


class FinishKind(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


@dataclass(frozen=True)
class FinishReason:
    kind: FinishKind
    matched: int | str | None = None  # the stop token id or stop string (kind STOP)
    length: int | None = None  # max_new_tokens (kind LENGTH)
    message: str | None = None  # why (kind ABORT)
    status_code: int | None = None  # kind ABORT from an error: 400 (the caller's), 500 (ours)

    def to_json(self) -> dict[str, Any]:
        """SGLang's `meta_info["finish_reason"]` shape."""
        out: dict[str, Any] = {"type": self.kind.value}
        if self.kind is FinishKind.STOP:
            out["matched"] = self.matched
        elif self.kind is FinishKind.LENGTH:
            out["length"] = self.length
        else:
            out["message"] = self.message
            if self.status_code is not None:
                out["status_code"] = self.status_code
        return out


@dataclass
class LogprobOptions:
    return_logprob: bool = False
    logprob_start_len: int = -1  # -1: output tokens only
    top_logprobs_num: int = 0
    return_text_in_logprobs: bool = False


@dataclass
class Req:
    """`rid` is the engine's own key, unique among all requests ever made; `label` is the
    caller's name for it (echoed as `meta_info["id"]`), `group` the caller's name for its prompt
    (equal to `label` unless `n > 1`), `tenant` who may abort it. Labels may repeat across
    callers: nothing inside the scheduler is keyed by them."""

    rid: str
    origin_input_ids: list[int]
    sampling_params: SamplingParams
    logprob: LogprobOptions
    detokenizer: IncrementalDetokenizer
    stream: bool = False
    seed: int = 0  # the sampling RNG seed (sampling_seed, or drawn by the engine)
    grammar: Grammar | None = None  # the output's regex / JSON schema / grammar constraint
    label: str = ""  # the caller's id for this request ("" -> rid)
    group: str = ""  # the caller's id for the prompt this request samples ("" -> label)
    tenant: str | None = None
    images: tuple[PromptImage, ...] = ()  # images in the prompt (their placeholder ids are < 0)

    output_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None

    # KV state, valid while the request holds a req-table row.
    req_pool_row: int | None = None
    prefix_indices: torch.Tensor | None = None  # slots of the cached prefix (tree-owned)
    last_node: TreeNode | None = None  # locked end of the prefix
    kv_len: int = 0  # positions [0, kv_len) have KV in the req table
    cached_tokens: int = 0  # prompt tokens served from the radix cache (reported to clients)

    # Logprobs gathered so far: (logprob, token_id) and, per position, top-k lists.
    input_token_logprobs: list[tuple[float | None, int]] = field(default_factory=list)
    input_top_logprobs: list[list[tuple[float, int]] | None] = field(default_factory=list)
    output_token_logprobs: list[tuple[float, int]] = field(default_factory=list)
    output_top_logprobs: list[list[tuple[float, int]]] = field(default_factory=list)

    created_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    retractions: int = 0
    forced_tokens: int = 0  # output tokens appended by jump-forward, not sampled
    sampling_rng: Any = None  # random.Random, created by the scheduler on admission
    spec: Any = None  # scheduler.speculative.SpecState, once n-gram drafting considered it

    def __post_init__(self) -> None:
        self.label = self.label or self.rid
        self.group = self.group or self.label

    @property
    def fill_ids(self) -> list[int]:
        return self.origin_input_ids + self.output_ids

    @property
    def seq_len(self) -> int:
        return len(self.origin_input_ids) + len(self.output_ids)

    @property
    def cached_len(self) -> int:
        return 0 if self.prefix_indices is None else int(self.prefix_indices.shape[0])

    @property
    def pending_len(self) -> int:
        return self.seq_len - self.kv_len

    @property
    def is_finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def max_new_remaining(self) -> int:
        return self.sampling_params.max_new_tokens - len(self.output_ids)

    @property
    def can_jump_forward(self) -> bool:
        """Constrained and not reporting logprobs (forced tokens have none)."""
        return self.grammar is not None and not self.logprob.return_logprob

    @property
    def wants_input_logprobs(self) -> bool:
        return self.logprob.return_logprob and self.logprob.logprob_start_len >= 0

    def finish(self, reason: FinishReason) -> None:
        if self.finish_reason is None:
            self.finish_reason = reason
