"""Every performance threshold of the runtime, in one overridable place.

The defaults are measured choices, not correctness limits: any value gives the same outputs, only
speed changes. The measurements behind each default, with the machine and benchmark that
produced them, are in `docs/tuning.md`; the reasoning stays in the field docs below.

Override from Python with `EngineConfig(tune=("max_in_place_extend=512",))` or on the command
line with `--tune max_in_place_extend=512` (repeatable). `Tuning.parse` names an unknown field or
a bad value in its error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch


def _knob(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Tuning:
    """Thresholds that steer the attention planner and the kernels' choice of path."""

    # --- attention planner: which shared prefixes split off as segments ---
    min_shared_prefix: int = _knob(
        16, "Shortest common prefix worth a separate attention segment (tokens)."
    )
    min_segment_saving: int = _knob(
        1024,
        "A gathered segment costs a few kernel calls per layer; it pays once the KV it stops "
        "re-reading, (requests - 1) x prefix tokens, is at least this large.",
    )
    min_in_place_segment_saving: int = _knob(
        12 * 1024,
        "The same for extends whose own parts the native kernel reads in place: re-reading a "
        "shared prefix in place is cheap (its rows stay in cache), so a segment must save more.",
    )
    min_in_place_decode_segment_saving: int = _knob(
        32 * 1024,
        "The same for decode steps: the native kernel already reads a prefix once for the "
        "requests whose rows share it (fork groups), so a segment and its merge win only when "
        "very wide.",
    )
    amx_min_segment_saving: int = _knob(
        256,
        "The same on the AMX segment kernel, where a segment spares re-packing its prefix into "
        "tiles once per request and fills the tiles of decode steps.",
    )
    # --- attention planner: how own parts run on the gathering (flash) path ---
    ragged_waste_ratio: float = _knob(
        2.0,
        "Own parts run one problem per request when padding the batch to its longest extend "
        "and longest KV would multiply the (query, key) pairs by more than this.",
    )
    min_compute_bound_extend: int = _knob(
        16,
        "From this many new tokens per request an extend is compute-bound: when segments would "
        "leave own parts that go one call per request, one padded problem over whole sequences "
        "is faster.",
    )
    # --- attention planner: what the native in-place kernel takes ---
    max_in_place_extend: int = _knob(
        1024,
        "Most new tokens per request whose own part the native kernel reads in place (float32 "
        "pools: register-tiled blocks). Longer extends gather and use flash attention.",
    )
    max_in_place_extend_bfloat16: int = _knob(
        24,
        "The same for bfloat16 pools, whose kernel path goes row by row and re-reads K/V per "
        "token, so it wins only for short extends.",
    )
    extend_block_tokens: int = _knob(
        16,
        "Consecutive new tokens of one request the native kernel computes together (each K/V "
        "block read once for all of them).",
    )
    # --- matmuls: when small passes multiply by the file's quantized blocks ---
    int4_max_tokens_bfloat16: int = _knob(
        8,
        "Widest pass (tokens) that the bfloat16 4-bit kernel (native AVX512-BF16, else "
        "PyTorch's) runs faster than the dense GEMM; used when EngineConfig.int4_max_tokens is "
        "unset.",
    )
    int4_max_tokens_float32: int = _knob(
        128,
        "Widest pass that the native float32 4-bit kernel runs faster than the dense GEMM.",
    )
    int8_head_max_tokens: int = _knob(
        24,
        "Widest pass (rows) for which a float32 engine's output head multiplies by its Q8_0 "
        "blocks instead of the dense weights.",
    )
    int8_head_max_tokens_bfloat16: int = _knob(
        8,
        "The same for a bfloat16 engine (the AVX512-BF16 kernel against oneDNN's bfloat16 GEMM).",
    )

    # --- speculative decoding ---
    speculative_max_step_tokens: int = _knob(
        8,
        "Most tokens (pending + drafted, over the batch) a decode step that verifies n-gram "
        "drafts may hold: drafts are shared out under it, so wide batches, whose steps already "
        "cost in proportion to their tokens, draft little or nothing.",
    )
    speculative_num_draft_tokens_bfloat16: int = _knob(
        5,
        "Longest draft of one request in one step, bfloat16 (where drafts are sized by their "
        "acceptance, 5 beat 3 by 9% on the extraction prompts).",
    )
    speculative_num_draft_tokens_float32: int = _knob(
        3,
        "The same for float32 (a 5-row pass left the AVX2 kernel's 4-row register path).",
    )
    speculative_draft_cost_bfloat16: float = _knob(
        0.4,
        "What a verify pass costs per drafted token, as a share of a one-token decode step, "
        "bfloat16 (SmolLM2, 2 cores: a 4-token pass takes 2.2x a 1-token one). Each request "
        "drafts the length k that maximizes its expected tokens per cost, "
        "(1 + a + ... + a^k) / (1 + cost x k), a its recent acceptance rate; 0: always the "
        "longest draft.",
    )
    speculative_draft_cost_float32: float = _knob(
        0.05,
        "The same for float32 (its 4-bit kernel is nearly flat in rows: a 6-token fused pass "
        "took 1.06x a 1-token one).",
    )

    def speculative_draft_tokens(self, dtype: torch.dtype) -> int:
        """The longest draft for activations of `dtype`."""
        if dtype == torch.bfloat16:
            return self.speculative_num_draft_tokens_bfloat16
        return self.speculative_num_draft_tokens_float32

    def speculative_draft_cost(self, dtype: torch.dtype) -> float:
        """A drafted token's share of a decode step's cost, for activations of `dtype`."""
        if dtype == torch.bfloat16:
            return self.speculative_draft_cost_bfloat16
        return self.speculative_draft_cost_float32

    def int4_max_tokens(self, dtype: torch.dtype) -> int:
        """The default 4-bit width for activations of `dtype` (0: no 4-bit kernel)."""
        return {
            torch.bfloat16: self.int4_max_tokens_bfloat16,
            torch.float32: self.int4_max_tokens_float32,
        }.get(dtype, 0)

    def int8_head_max_tokens_for(self, dtype: torch.dtype) -> int:
        """The widest pass whose head multiplies by 8-bit blocks, for activations of `dtype`."""
        return {
            torch.bfloat16: self.int8_head_max_tokens_bfloat16,
            torch.float32: self.int8_head_max_tokens,
        }.get(dtype, 0)

    @classmethod
    def parse(cls, overrides: Iterable[str]) -> Tuning:
        """Defaults with `name=value` overrides applied; ValueError names a bad entry."""
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        changes: dict[str, Any] = {}
        for entry in overrides:
            name, sep, text = entry.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in kinds:
                raise ValueError(
                    f"tune: {entry!r} is not name=value with a name among {sorted(kinds)}"
                )
            kind = float if kinds[name] in (float, "float") else int
            try:
                value = kind(text)
            except ValueError:
                what = "a number" if kind is float else "an integer"
                raise ValueError(f"tune: {name} takes {what}, got {text!r}") from None
            if value < 0:
                raise ValueError(f"tune: {name} must be >= 0, got {value}")
            changes[name] = value
        return cls(**changes)
