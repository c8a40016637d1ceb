"""Sampling parameters: SGLang's field names, defaults and validation rules.

`SamplingParams.from_dict` is how every surface (Engine, native API, OpenAI API) builds them: null
values fall back to defaults, unknown keys and out-of-range values raise `InvalidRequestError`
naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

GREEDY_TEMPERATURE = 1e-6  # temperatures below this are greedy decoding
CONSTRAINT_FIELDS = ("json_schema", "regex", "ebnf")  # output constraints; at most one is set


class InvalidRequestError(ValueError):
    """A caller mistake. `param` names the offending field (the OpenAI envelope's `param`)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    min_new_tokens: int = 0
    n: int = 1
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    stop_regex: str | list[str] | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    no_stop_trim: bool = False
    logit_bias: dict[str, float] | None = None
    sampling_seed: int | None = None
    json_schema: str | None = None
    regex: str | None = None
    ebnf: str | None = None
    structural_tag: str | None = None
    stream_interval: int | None = None
    custom_params: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> SamplingParams:
        values = dict(values or {})
        if "seed" in values and values.get("sampling_seed") is None:
            values["sampling_seed"] = values.pop("seed")
        values.pop("seed", None)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InvalidRequestError(f"unknown sampling parameter(s): {unknown}", unknown[0])
        params = cls(**{k: v for k, v in values.items() if v is not None})
        params.normalize()
        params.verify()
        return params

    @property
    def is_greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE or self.top_k == 1

    @property
    def needs_penalties(self) -> bool:
        return (
            self.frequency_penalty != 0.0
            or self.presence_penalty != 0.0
            or self.repetition_penalty != 1.0
        )

    @property
    def needs_sorting(self) -> bool:
        return self.top_p < 1.0 or self.top_k > 1 or self.min_p > 0.0

    def normalize(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if isinstance(self.stop_token_ids, int):
            self.stop_token_ids = [self.stop_token_ids]
        self.stop = list(self.stop)
        self.stop_token_ids = list(self.stop_token_ids)
        if isinstance(self.json_schema, dict | bool):  # SGLang takes a string; accept the object
            self.json_schema = json.dumps(self.json_schema)

    def verify(self, vocab_size: int | None = None) -> None:
        """Raise `InvalidRequestError` naming the first field out of range."""

        def check(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise InvalidRequestError(f"{name} {rule}, got {getattr(self, name)!r}", param=name)

        def is_number(name: str) -> bool:
            value = getattr(self, name)
            return isinstance(value, int | float) and not isinstance(value, bool)

        def is_int(name: str) -> bool:
            value = getattr(self, name)
            return isinstance(value, int) and not isinstance(value, bool)

        for name in (
            "temperature",
            "top_p",
            "min_p",
            "frequency_penalty",
            "presence_penalty",
            "repetition_penalty",
        ):
            check(is_number(name), name, "must be a number")
        for name in ("max_new_tokens", "min_new_tokens", "n", "top_k"):
            check(is_int(name), name, "must be an integer")
        check(
            math.isfinite(self.temperature) and self.temperature >= 0,
            "temperature",
            "must be a finite number >= 0",
        )
        check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        check(0 <= self.min_p <= 1, "min_p", "must be in [0, 1]")
        check(self.top_k >= 1 or self.top_k == -1, "top_k", "must be >= 1, or -1 to disable")
        check(-2 <= self.frequency_penalty <= 2, "frequency_penalty", "must be in [-2, 2]")
        check(-2 <= self.presence_penalty <= 2, "presence_penalty", "must be in [-2, 2]")
        check(0 < self.repetition_penalty <= 2, "repetition_penalty", "must be in (0, 2]")
        check(self.max_new_tokens >= 0, "max_new_tokens", "must be >= 0")
        check(
            0 <= self.min_new_tokens <= self.max_new_tokens,
            "min_new_tokens",
            "must be in [0, max_new_tokens]",
        )
        check(self.n >= 1, "n", "must be >= 1")
        check(
            all(isinstance(s, str) and s for s in self.stop),
            "stop",
            "must be a non-empty string or a list of non-empty strings",
        )
        check(
            all(is_int_value(t) for t in self.stop_token_ids),
            "stop_token_ids",
            "must be a list of integers",
        )
        if self.sampling_seed is not None:
            check(is_int_value(self.sampling_seed), "sampling_seed", "must be an integer")
        constraints = [n for n in CONSTRAINT_FIELDS if getattr(self, n) is not None]
        if len(constraints) > 1:
            raise InvalidRequestError(
                f"at most one of json_schema, regex, ebnf may be set (got {constraints})",
                param=constraints[1],
            )
        if self.logit_bias is not None:
            check(isinstance(self.logit_bias, dict), "logit_bias", "must be a dict")
            for key in self.logit_bias:
                if vocab_size is not None and not 0 <= int(key) < vocab_size:
                    raise InvalidRequestError(
                        f"logit_bias token {key} is out of the vocabulary", param="logit_bias"
                    )
        if vocab_size is not None:
            for t in self.stop_token_ids:
                check(0 <= t < vocab_size, "stop_token_ids", f"must be in [0, {vocab_size})")


def is_int_value(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
