"""Sampling parameters: SGLang's field names, defaults and validation rules, as one pydantic
model that every surface (Engine, native API, OpenAI API, language) goes through.

Contract: a `SamplingParams` that exists is valid in itself -- types are strict (no "1" for 1, no
1.0 for an integer, no 0 for a boolean), numbers are finite and in range, lists are bounded,
strings are valid Unicode (no lone surrogates). Only the model-dependent checks (token ids within
the vocabulary) wait for `verify(vocab_size)`. `from_dict` turns any validation failure into an
`InvalidRequestError` naming the field; nulls and empty lists mean "unset" (the default).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from radixgen.runtime.stop_regex import compile_stop_regex
from radixgen.runtime.validation import InvalidRequestError, first_error

__all__ = ["InvalidRequestError", "SamplingParams"]

GREEDY_TEMPERATURE = 1e-6  # temperatures below this are greedy decoding
# Output constraints; at most one is set.
CONSTRAINT_FIELDS = ("json_schema", "regex", "ebnf", "structural_tag")
INT64 = 2**63 - 1
MAX_STOP_SEQUENCES = 16
MAX_STOP_LENGTH = 1024
MAX_STOP_TOKEN_IDS = 1024
MAX_LOGIT_BIAS = 1024  # entries
LOGIT_BIAS_RANGE = 100.0  # OpenAI's [-100, 100]
MAX_PATTERN_CHARS = 1 << 20  # a regex, schema or grammar source
_TOKEN_ID_KEY = re.compile(r"[0-9]{1,10}", re.ASCII)


def valid_unicode(text: str) -> str:
    """Reject strings that cannot be encoded as UTF-8 (lone surrogates, which JSON's `\\ud800`
    escapes can produce): tokenizers and templates fail on them deep inside."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return text


def _empty_as_none(value: Any) -> Any:
    return None if isinstance(value, list | tuple | dict) and not value else value


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str | int) and not isinstance(value, bool) else value


def _schema_text(value: Any) -> Any:
    """SGLang takes a JSON schema as a string; accept the object too (dict or boolean)."""
    return json.dumps(value) if isinstance(value, dict | bool) else value


def _stop_regex(pattern: str) -> str:
    """A valid Python regular expression (compiled once here; the engine reuses it)."""
    compile_stop_regex(pattern)
    return pattern


def _token_id_keys(bias: dict[Any, float]) -> dict[int, float]:
    """OpenAI's logit_bias keys are token ids as strings ("50256"); ints are accepted too."""
    out: dict[int, float] = {}
    for key, value in bias.items():
        if isinstance(key, bool) or not (
            isinstance(key, int) or (isinstance(key, str) and _TOKEN_ID_KEY.fullmatch(key))
        ):
            raise ValueError(f"keys must be token ids (ASCII digits), got {key!r}")
        out[int(key)] = value
    return out


Text = Annotated[str, Strict(), AfterValidator(valid_unicode)]
Pattern = Annotated[Text, Field(min_length=1, max_length=MAX_PATTERN_CHARS)]
FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]
StopString = Annotated[Text, Field(min_length=1, max_length=MAX_STOP_LENGTH)]
StopRegex = Annotated[StopString, AfterValidator(_stop_regex)]
TokenId = Annotated[StrictInt, Field(ge=0)]
BiasValue = Annotated[FiniteFloat, Field(ge=-LOGIT_BIAS_RANGE, le=LOGIT_BIAS_RANGE)]
Unset = BeforeValidator(_empty_as_none)
LogitBias = Annotated[
    dict[int | str, BiasValue], Field(max_length=MAX_LOGIT_BIAS), AfterValidator(_token_id_keys)
]


class SamplingParams(BaseModel):
    """How one request samples and when it stops. Mutable only by the engine (normalising);
    shared read-only by the `n` samples of a request."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    max_new_tokens: Annotated[StrictInt, Field(ge=0, le=INT64)] = 128
    min_new_tokens: Annotated[StrictInt, Field(ge=0, le=INT64)] = 0
    n: Annotated[StrictInt, Field(ge=1)] = 1
    stop: Annotated[
        list[StopString], Field(max_length=MAX_STOP_SEQUENCES), BeforeValidator(_one_or_many)
    ] = Field(default_factory=list)
    stop_token_ids: Annotated[
        list[TokenId], Field(max_length=MAX_STOP_TOKEN_IDS), BeforeValidator(_one_or_many)
    ] = Field(default_factory=list)
    stop_regex: Annotated[
        Annotated[list[StopRegex], Field(max_length=MAX_STOP_SEQUENCES)] | None,
        BeforeValidator(_one_or_many),
        Unset,
    ] = None
    temperature: Annotated[FiniteFloat, Field(ge=0)] = 1.0
    top_p: Annotated[FiniteFloat, Field(gt=0, le=1)] = 1.0
    top_k: StrictInt = -1
    min_p: Annotated[FiniteFloat, Field(ge=0, le=1)] = 0.0
    frequency_penalty: Annotated[FiniteFloat, Field(ge=-2, le=2)] = 0.0
    presence_penalty: Annotated[FiniteFloat, Field(ge=-2, le=2)] = 0.0
    repetition_penalty: Annotated[FiniteFloat, Field(gt=0, le=2)] = 1.0
    ignore_eos: StrictBool = False
    skip_special_tokens: StrictBool = True
    spaces_between_special_tokens: StrictBool = True
    no_stop_trim: StrictBool = False
    logit_bias: Annotated[LogitBias | None, Unset] = None
    sampling_seed: Annotated[
        StrictInt | None,
        Field(ge=-INT64 - 1, le=INT64, validation_alias=AliasChoices("sampling_seed", "seed")),
    ] = None
    json_schema: Annotated[Pattern | None, BeforeValidator(_schema_text)] = None
    regex: Pattern | None = None
    ebnf: Pattern | None = None
    structural_tag: Annotated[Pattern | None, BeforeValidator(_schema_text), Unset] = None
    stream_interval: Annotated[StrictInt | None, Field(ge=1)] = None
    custom_params: Annotated[dict[str, Any] | None, Unset] = None

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_unset(cls, values: Any) -> Any:
        if isinstance(values, dict):
            return {k: v for k, v in values.items() if v is not None}
        return values

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, value: int) -> int:
        if value < 1 and value != -1:
            raise ValueError("must be >= 1, or -1 to disable")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SamplingParams:
        if self.min_new_tokens > self.max_new_tokens:
            raise InvalidRequestError(
                f"min_new_tokens must be in [0, max_new_tokens], got {self.min_new_tokens}",
                "min_new_tokens",
            )
        constraints = [name for name in CONSTRAINT_FIELDS if getattr(self, name) is not None]
        if len(constraints) > 1:
            raise InvalidRequestError(
                f"at most one of {', '.join(CONSTRAINT_FIELDS)} may be set (got {constraints})",
                constraints[1],
            )
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any] | SamplingParams | None) -> SamplingParams:
        """Validate a request's sampling parameters; nulls fall back to the defaults."""
        if isinstance(values, SamplingParams):
            return values
        if values is None:
            return cls()
        if not isinstance(values, dict):
            raise InvalidRequestError("sampling_params must be an object", "sampling_params")
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            error = first_error(exc.errors(include_url=False, include_input=False))
            raise error from None

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

    def verify(self, vocab_size: int) -> None:
        """The checks that need the model: every token id named must be in the vocabulary."""
        for name, ids in (("stop_token_ids", self.stop_token_ids), ("logit_bias", self.logit_bias)):
            bad = [t for t in ids or () if t >= vocab_size]
            if bad:
                raise InvalidRequestError(
                    f"{name}: token id {bad[0]} is outside the vocabulary [0, {vocab_size})", name
                )
