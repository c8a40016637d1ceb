"""How `select` decides: choice-scoring methods over prompt logprobs.

A backend scores each choice by appending it to the program text and reading the prompt logprobs
of the appended span (`heal_choice_spans` applies SGLang's token-healing window). Entries are
`[logprob, token_id, token_text]` triples. A method turns the scores into a `ChoicesDecision`.

Missing logprobs: the first entry of a returned span has none (None). SGLang's mean skips None
and 0.0 entries; where a number is needed per position (the greedy matrix, the unconditional
difference) a None counts as 0.0.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

Entry = list[Any]  # [logprob | None, token_id | None, token_text | None]


@dataclass
class ChoicesDecision:
    decision: str
    meta_info: dict[str, Any] | None = None


def normalized_logprob(entries: list[Entry]) -> float:
    """Mean logprob of a span, skipping None/0.0 entries (0.0 for a span with none left)."""
    values = [e[0] for e in entries if e[0]]
    return sum(values) / len(values) if values else 0.0


def heal_choice_spans(text: str, spans: list[list[Entry]]) -> tuple[list[list[Entry]], list[float]]:
    """SGLang's first-entry rule. Spans start two tokens before the end of the prompt, so a
    choice that re-tokenizes together with the prompt's tail is scored on the merged tokens
    ("token healing"). When a span's first token text is a suffix of `text` no merge happened,
    and that entry is dropped. Returns the (possibly trimmed) spans and their mean logprobs."""
    trimmed = []
    for span in spans:
        first = span[0][2] if span else None
        if first is not None and text.endswith(first):
            span = span[1:]
        trimmed.append(span)
    return trimmed, [normalized_logprob(span) for span in trimmed]


def _value(entry: Entry) -> float:
    return 0.0 if entry[0] is None else float(entry[0])


def _argmax(values: list[float]) -> int:
    """Index of the first maximum."""
    best = 0
    for i, value in enumerate(values):
        if value > values[best]:
            best = i
    return best


class ChoicesSamplingMethod(ABC):
    @property
    def requires_unconditional_logprobs(self) -> bool:
        """True if the backend must also score each choice span without the prompt."""
        return False

    @abstractmethod
    def __call__(
        self,
        *,
        choices: list[str],
        normalized_prompt_logprobs: list[float],
        input_token_logprobs: list[list[Entry]],
        output_token_logprobs: list[list[Entry]],
        unconditional_token_logprobs: list[list[Entry]] | None = None,
    ) -> ChoicesDecision: ...

    @staticmethod
    def _meta(normalized, input_lps, output_lps, **extra: Any) -> dict[str, Any]:
        return {
            "normalized_prompt_logprobs": normalized,
            "input_token_logprobs": input_lps,
            "output_token_logprobs": output_lps,
            **extra,
        }


class TokenLengthNormalized(ChoicesSamplingMethod):
    """The choice with the highest mean token logprob (SGLang's default; it favours long,
    predictable options)."""

    def __call__(
        self,
        *,
        choices,
        normalized_prompt_logprobs,
        input_token_logprobs,
        output_token_logprobs,
        unconditional_token_logprobs=None,
    ) -> ChoicesDecision:
        best = _argmax(normalized_prompt_logprobs)
        meta = self._meta(normalized_prompt_logprobs, input_token_logprobs, output_token_logprobs)
        return ChoicesDecision(choices[best], meta)


class GreedyTokenSelection(ChoicesSamplingMethod):
    """Token-by-token elimination: at each position keep the options with the highest logprob.
    A shorter option is padded with its own mean logprob so it can compete with longer ones."""

    def __call__(
        self,
        *,
        choices,
        normalized_prompt_logprobs,
        input_token_logprobs,
        output_token_logprobs,
        unconditional_token_logprobs=None,
    ) -> ChoicesDecision:
        width = max(len(span) for span in input_token_logprobs)
        matrix = []
        for span in input_token_logprobs:
            row = [_value(e) for e in span]
            pad = sum(row) / len(row) if row else float("nan")
            matrix.append(row + [pad] * (width - len(row)))
        remaining = list(range(len(choices)))
        for column in range(width):
            best = max(matrix[i][column] for i in remaining)
            remaining = [i for i in remaining if matrix[i][column] == best]
            if len(remaining) == 1:
                break
        meta = self._meta(
            normalized_prompt_logprobs,
            input_token_logprobs,
            output_token_logprobs,
            greedy_logprob_matrix=matrix,
        )
        return ChoicesDecision(choices[remaining[0]], meta)


class UnconditionalLikelihoodNormalized(ChoicesSamplingMethod):
    """The choice with the highest mean of (conditional - unconditional) token logprobs: how
    much the prompt raises each token above its prior."""

    @property
    def requires_unconditional_logprobs(self) -> bool:
        return True

    def __call__(
        self,
        *,
        choices,
        normalized_prompt_logprobs,
        input_token_logprobs,
        output_token_logprobs,
        unconditional_token_logprobs=None,
    ) -> ChoicesDecision:
        if unconditional_token_logprobs is None:
            raise ValueError("unconditional token logprobs are required for this method")
        scores = []
        for cond, uncond in zip(input_token_logprobs, unconditional_token_logprobs, strict=True):
            if len(cond) != len(uncond):
                raise ValueError("conditional and unconditional spans differ in length")
            diffs = [_value(c) - _value(u) for c, u in zip(cond, uncond, strict=True)]
            scores.append(sum(diffs) / len(diffs) if diffs else 0.0)
        meta = self._meta(
            normalized_prompt_logprobs,
            input_token_logprobs,
            output_token_logprobs,
            unconditional_token_logprobs=unconditional_token_logprobs,
            normalized_unconditional_prompt_logprobs=scores,
        )
        return ChoicesDecision(choices[_argmax(scores)], meta)


token_length_normalized = TokenLengthNormalized()
greedy_token_selection = GreedyTokenSelection()
unconditional_likelihood_normalized = UnconditionalLikelihoodNormalized()
