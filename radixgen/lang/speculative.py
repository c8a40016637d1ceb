"""API speculative execution (`@function(num_api_spec_tokens=N)`): fewer calls to remote APIs.

Completion models (`completion_gen`): a gen with no speculation at hand asks for
max(max_tokens, N) tokens without stop strings and keeps the text beyond its own stop as
`s.speculated_text`. Later fills consume it while they match (a mismatch drops it), and later
gens cut their value from it at their stop string. A gen whose stop string is not in the
speculated text makes its own regular call instead, so every variable gets the value it would
have had without speculation.

Chat models (`ChatSpeculation`): inside an assistant turn, fills and gens are recorded instead
of run; at the end of the turn one chat call with max_tokens=N answers them all, and the answer
is split into the recorded variables by matching the fills and cutting gens at their stops.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from radixgen.lang.ir import SglSamplingParams

if TYPE_CHECKING:
    from radixgen.lang.interpreter import StreamExecutor

MAX_TRIES = 3  # chat calls per turn when sampling (a greedy answer would not change)


def find_first(text: str, stops: list[str]) -> int:
    """Index of the earliest stop string in `text`, or -1."""
    found = [i for i in (text.find(s) for s in stops if s) if i != -1]
    return min(found) if found else -1


def completion_gen(s: StreamExecutor, params: SglSamplingParams) -> tuple[str, dict[str, Any]]:
    stops = params.stop_list()
    meta_info: dict[str, Any] = {}
    fresh = not s.speculated_text
    if fresh:
        ahead = copy.deepcopy(params)
        ahead.max_new_tokens = max(params.max_new_tokens, s.num_api_spec_tokens)
        ahead.stop = ()
        s.speculated_text, meta_info = s.backend.generate(s, ahead)
    pos = find_first(s.speculated_text, stops)
    if pos == -1:
        if not (fresh and params.max_new_tokens >= s.num_api_spec_tokens):
            s.speculated_text = ""  # cannot tell where this gen would have ended
            return s.backend.generate(s, params)
        pos = len(s.speculated_text)
    comp, s.speculated_text = s.speculated_text[:pos], s.speculated_text[pos:]
    return comp, meta_info


@dataclass
class _Term:
    text: str = ""  # a fill's text, or (after matching) a gen's value
    name: str | None = None
    node: Any = None  # the gen node (its variable event)
    stops: list[str] | None = None  # None for fills

    @property
    def is_gen(self) -> bool:
        return self.stops is not None


@dataclass
class ChatSpeculation:
    """The recorded fills and gens of one assistant turn of a chat model."""

    max_tokens: int
    terms: list[_Term] = field(default_factory=list)
    kwargs: dict[str, Any] | None = None

    def record_fill(self, text: str) -> None:
        self.terms.append(_Term(text=text))

    def record_gen(self, node: Any, params: SglSamplingParams) -> None:
        kwargs = params.to_openai_kwargs()
        kwargs.pop("stop")
        kwargs.pop("max_tokens")  # the turn asks for `max_tokens` (num_api_spec_tokens)
        if self.kwargs is not None and kwargs != self.kwargs:
            raise ValueError("gens of a speculated turn must share their sampling parameters")
        self.kwargs = kwargs
        self.terms.append(_Term(name=node.name, node=node, stops=params.stop_list()))

    def run(self, s: StreamExecutor) -> None:
        """One chat call for the turn; append the matched text and set the variables."""
        values = [t.text for t in self.terms]
        if self.kwargs is not None:
            tries = MAX_TRIES if self.kwargs.get("temperature", 0) > 0 else 1
            for attempt in range(tries):
                answer = s.backend.complete_chat(
                    s.messages_, max_tokens=self.max_tokens, **self.kwargs
                )
                matched = self.match(answer, strict=attempt < tries - 1)
                if matched is not None:
                    values = matched
                    break
        for term, value in zip(self.terms, values, strict=True):
            s.text_ += value
            if term.is_gen:
                s.set_result(term.node, term.name, value, {})

    def match(self, answer: str, strict: bool) -> list[str] | None:
        """Split `answer` along the terms. Strict: every fill must appear where expected (else
        None). Lenient (last try): a fill that does not match is kept but consumes nothing."""
        values = []
        rest = answer
        for i, term in enumerate(self.terms):
            if not term.is_gen:
                if rest.startswith(term.text):
                    rest = rest[len(term.text) :]
                elif strict:
                    return None
                values.append(term.text)
                continue
            pos = find_first(rest, term.stops)
            if pos == -1:
                if strict and i != len(self.terms) - 1:
                    return None
                pos = len(rest)
            values.append(rest[:pos])
            rest = rest[pos:]
        return values
