"""SGLang's native `/generate` protocol, shared by the in-process engine and the HTTP endpoint.

`NativeBackend` builds the exact request bodies SGLang's `RuntimeEndpoint` sends (generation,
prefill-only cache warming, the three-step `select` scoring); a subclass supplies the transport
(`_post_generate`, `_stream_generate`). Responses are SGLang-shaped dicts (or lists of them for
batched requests).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from radixgen.lang.backend.base import BaseBackend
from radixgen.lang.choices import ChoicesDecision, ChoicesSamplingMethod, heal_choice_spans
from radixgen.lang.global_config import global_config
from radixgen.lang.ir import REGEX_BOOL, REGEX_FLOAT, REGEX_INT, REGEX_STR, SglSamplingParams

if TYPE_CHECKING:
    from radixgen.lang.interpreter import StreamExecutor

Output = dict[str, Any]

_DTYPE_REGEX = {
    int: (REGEX_INT, True),
    "int": (REGEX_INT, True),
    float: (REGEX_FLOAT, True),
    "float": (REGEX_FLOAT, True),
    str: (REGEX_STR, False),
    "str": (REGEX_STR, False),
    bool: (REGEX_BOOL, False),
    "bool": (REGEX_BOOL, False),
}


def apply_dtype(params: SglSamplingParams) -> SglSamplingParams:
    """A copy where `dtype` became a regex (int/float also stop at a space or newline).
    `dtype` wins over an explicit `regex`, with a warning, as in SGLang."""
    if params.dtype is None:
        return params
    try:
        regex, stops_at_space = _DTYPE_REGEX[params.dtype]
    except (KeyError, TypeError):
        raise ValueError(f"invalid dtype: {params.dtype!r}") from None
    params = copy.deepcopy(params)
    if params.regex is not None:
        warnings.warn(
            f"both dtype and regex are set; dtype {params.dtype!r} wins over {params.regex!r}",
            stacklevel=2,
        )
    params.regex = regex
    if stops_at_space:
        params.stop = [*params.stop_list(), " ", "\n"]
    return params


class NativeBackend(BaseBackend):
    """A backend that speaks SGLang's native generate protocol."""

    def _post_generate(self, payload: dict[str, Any]) -> Output | list[Output]:
        """Run one native `/generate` request body, non-streaming."""
        raise NotImplementedError

    def _stream_generate(self, payload: dict[str, Any]) -> Iterator[Output]:
        """Run one streaming request body; yields cumulative outputs."""
        raise NotImplementedError

    # --- requests ----------------------------------------------------------------------------

    def _prefill(self, text: str, s: StreamExecutor | None = None) -> Output:
        payload: dict[str, Any] = {"text": text, "sampling_params": {"max_new_tokens": 0}}
        if s is not None:
            self._add_images(s, payload)
        return self._post_generate(payload)

    def _generate_payload(self, s: StreamExecutor, params: SglSamplingParams) -> dict[str, Any]:
        params = apply_dtype(params)
        payload: dict[str, Any] = {
            "text": s.text_,
            "sampling_params": {
                "skip_special_tokens": global_config.skip_special_tokens_in_output,
                "spaces_between_special_tokens": global_config.spaces_between_special_tokens_in_out,
                **params.to_srt_kwargs(),
            },
        }
        for name in ("return_logprob", "logprob_start_len", "top_logprobs_num"):
            if getattr(params, name) is not None:
                payload[name] = getattr(params, name)
        if params.return_text_in_logprobs is not None:
            payload["return_text_in_logprobs"] = params.return_text_in_logprobs
        self._add_images(s, payload)
        return payload

    @staticmethod
    def _add_images(s: StreamExecutor, payload: dict[str, Any], batch: int | None = None) -> None:
        """Every image of the program so far, in text order (one per image token); for a
        `batch` of texts that all extend the program, the same images for each."""
        if s.images_:
            data = [encoded for _, encoded in s.images_]
            payload["image_data"] = [data] * batch if batch is not None else data

    # --- BaseBackend ---------------------------------------------------------------------------

    def cache_prefix(self, prefix_str: str) -> None:
        self._prefill(prefix_str)

    def commit_lazy_operations(self, s: StreamExecutor) -> None:
        self._prefill(s.text_, s)

    def fill_image(self, s: StreamExecutor) -> None:
        self._prefill(s.text_, s)

    def generate(self, s: StreamExecutor, sampling_params: SglSamplingParams):
        out = self._post_generate(self._generate_payload(s, sampling_params))
        if isinstance(out, list):  # n > 1
            return [o["text"] for o in out], [o["meta_info"] for o in out]
        return out["text"], out["meta_info"]

    def generate_stream(self, s: StreamExecutor, sampling_params: SglSamplingParams):
        payload = self._generate_payload(s, sampling_params)
        payload["stream"] = True
        sent = 0
        for out in self._stream_generate(payload):
            text = out["text"]
            yield text[sent:], out["meta_info"]
            sent = len(text)

    def select(
        self,
        s: StreamExecutor,
        choices: list[str],
        temperature: float,
        choices_method: ChoicesSamplingMethod,
    ) -> ChoicesDecision:
        """SGLang's scoring: (1) prefill the text and read its token count; (2) one batched
        prefill of text+choice with prompt logprobs from two tokens before the text's end;
        (3) if the method needs them, the choice spans' logprobs without the prompt."""
        if temperature > 1e-5:
            raise ValueError("select on this backend is greedy: temperature must be 0")
        prompt_len = self._prefill(s.text_, s)["meta_info"]["prompt_tokens"]
        payload: dict[str, Any] = {
            "text": [s.text_ + c for c in choices],
            "sampling_params": {"max_new_tokens": 0, "temperature": 0},
            "return_logprob": True,
            "return_text_in_logprobs": True,
            "logprob_start_len": max(prompt_len - 2, 0),
        }
        self._add_images(s, payload, len(choices))
        outs = self._post_generate(payload)
        spans = [o["meta_info"]["input_token_logprobs"] for o in outs]
        output_lps = [o["meta_info"].get("output_token_logprobs", []) for o in outs]
        spans, normalized = heal_choice_spans(s.text_, spans)
        unconditional = None
        if choices_method.requires_unconditional_logprobs:
            payload = {
                "input_ids": [[e[1] for e in span] for span in spans],
                "sampling_params": {"max_new_tokens": 0},
                "return_logprob": True,
                "logprob_start_len": 0,
            }
            unconditional = [
                o["meta_info"]["input_token_logprobs"] for o in self._post_generate(payload)
            ]
        return choices_method(
            choices=choices,
            normalized_prompt_logprobs=normalized,
            input_token_logprobs=spans,
            output_token_logprobs=output_lps,
            unconditional_token_logprobs=unconditional,
        )
