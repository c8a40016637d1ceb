"""Request bodies (pydantic). Unknown top-level fields are accepted and ignored, as vLLM and
OpenAI do; every field radixgen reads is typed strictly (no "1" for 1, no 0 for false), numbers
are finite and in the OpenAI API's ranges, strings are valid Unicode. `/generate`'s body is the
engine's own `GenerateInput`, so its nested `sampling_params` are checked field by field here and
appear in the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt

from radixgen.runtime.generate_input import MAX_TOP_LOGPROBS, GenerateInput, Label
from radixgen.runtime.sampling_params import (
    INT64,
    MAX_STOP_SEQUENCES,
    FiniteFloat,
    LogitBias,
    Pattern,
    StopRegex,
    StopString,
    Text,
    TokenId,
)

Stop = Annotated[list[StopString], Field(max_length=MAX_STOP_SEQUENCES)]
StopRegexes = Annotated[list[StopRegex], Field(max_length=MAX_STOP_SEQUENCES)]
Count = Annotated[StrictInt, Field(ge=0)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Lenient):
    include_usage: StrictBool = False


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class _SamplingFields(_Lenient):
    """Fields shared by /v1/completions and /v1/chat/completions (OpenAI plus extensions)."""

    model: Text | None = None
    n: Annotated[StrictInt, Field(ge=1)] = 1  # the engine's max_n caps it
    temperature: Annotated[FiniteFloat, Field(ge=0, le=2)] | None = None
    top_p: Annotated[FiniteFloat, Field(gt=0, le=1)] | None = None
    stop: Annotated[Stop | None, BeforeValidator(_one_or_many)] = None
    stop_regex: Annotated[StopRegexes | None, BeforeValidator(_one_or_many)] = None  # SGLang's
    seed: Annotated[StrictInt, Field(ge=-INT64 - 1, le=INT64)] | None = None
    presence_penalty: Annotated[FiniteFloat, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[FiniteFloat, Field(ge=-2, le=2)] | None = None
    logit_bias: LogitBias | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: Text | None = None
    # Extensions (vLLM / SGLang names).
    top_k: StrictInt | None = None
    min_p: Annotated[FiniteFloat, Field(ge=0, le=1)] | None = None
    repetition_penalty: Annotated[FiniteFloat, Field(gt=0, le=2)] | None = None
    min_tokens: Count | None = None
    ignore_eos: StrictBool | None = None
    skip_special_tokens: StrictBool | None = None
    stop_token_ids: list[TokenId] | None = None
    no_stop_trim: StrictBool | None = None
    rid: Label | None = None
    # Structured-output extensions (at most one; chat also takes response_format).
    regex: Pattern | None = None
    ebnf: Pattern | None = None
    choice: list[Text] | None = None
    json_schema: Pattern | dict[str, Any] | None = None  # SGLang's (a schema, not a format)


class CompletionRequest(_SamplingFields):
    prompt: Text | list[Text] | list[TokenId] | list[list[TokenId]]
    max_tokens: Count | None = 16
    logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    echo: StrictBool = False
    suffix: Text | None = None
    best_of: StrictInt | None = None


class TextPart(_Lenient):
    type: Literal["text"]
    text: Text


class ImageURL(_Lenient):
    url: Annotated[Text, Field(min_length=1)]  # a data URL or a local path (never fetched)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Lenient):
    type: Literal["image_url"]
    image_url: ImageURL


class ChatMessage(_Lenient):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Text | list[TextPart | ImagePart] | None = None
    name: Text | None = None
    tool_calls: list[dict[str, Any]] | None = None  # assistant turns that called tools
    tool_call_id: Text | None = None  # tool turns: which call this answers


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Count | None = None
    max_completion_tokens: Count | None = None
    logprobs: StrictBool = False
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: StrictBool = True


class GenerateRequest(GenerateInput):
    """SGLang's native `/generate` body (`GenerateReqInput`): the engine's input (with
    `image_data` for multimodal models); the SGLang fields radixgen does not use (`lora_path`,
    `video_data`, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")


class AbortRequest(_Lenient):
    rid: Label | None = None
    abort_all: StrictBool = False
