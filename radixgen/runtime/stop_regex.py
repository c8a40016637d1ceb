"""Stop regexes (SGLang's `stop_regex`): generation stops where the output text matches.

Semantics. After every committed piece of output text, each pattern is searched (Python `re`
syntax, `re.search` semantics) in the output so far; the leftmost match over all patterns wins
(ties: the first pattern listed). The request then finishes with `{"type": "stop", "matched":
<pattern>}` and the text is cut at the match's start (at its end with `no_stop_trim`). The check
runs on the text *so far*, so `$`, `\\b` and lookaheads see the current end of the text, as in
SGLang's per-step `re.search`.

Streaming rule (exact). While running, only the text before the *frontier* is shown: the
earliest position where a match could still start in some continuation of the text. It is the
start of the leftmost partial match (the `regex` package's `partial=True`: a match attempt that
reached the end of the text and could succeed with more). Any later match starts at or after
the frontier (a match in a longer text that started earlier would have been a partial match
now), so everything shown before it survives the trim, with or without `no_stop_trim`; and all
text before the frontier is shown, so nothing is held back that could not be trimmed. A pattern
that can match from far back holds back that much: `.*x` shows nothing of the current line.

Cost. Searches start at the previous frontier (matches cannot start before it), so each update
costs, per pattern, one search plus one partial search over `text[frontier:]`: O(P * W) steps
of the regex engine for P patterns (<= 16, each <= 1024 chars) and window W. For patterns with
a bounded match length W is bounded by it; for an open-ended partial match (`<a>.*?</a>` once
`<a>` appeared) W grows with the output, O(n^2) characters over an n-character output.
Backtracking patterns can cost more per position, so every update has a wall-clock budget
(`SEARCH_BUDGET_S`); a request over it is ended as a client error (`StopRegexTimeout`).

Patterns are compiled with Python's `re` to accept exactly its syntax, and matched with the
`regex` package (same syntax in its VERSION0 mode; it adds partial matching and timeouts). Both
are cached, so a pattern compiles once however many requests use it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from functools import lru_cache

import regex

SEARCH_BUDGET_S = 0.5  # wall-clock seconds for all patterns' searches in one update
CACHE_SIZE = 1024


class StopRegexTimeout(Exception):
    """Matching took longer than `SEARCH_BUDGET_S` (a pathological pattern for this text)."""


@lru_cache(maxsize=CACHE_SIZE)
def compile_stop_regex(pattern: str) -> regex.Pattern:
    """The compiled pattern; raises `ValueError` saying why when it is not a valid Python
    regular expression."""
    try:
        re.compile(pattern)
        return regex.compile(pattern, flags=regex.VERSION0)
    except (re.error, regex.error) as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


class StopRegexMatcher:
    """One request's stop regexes over its growing output text (see the module docstring)."""

    def __init__(self, patterns: Sequence[str]):
        self.patterns = tuple(patterns)
        self._compiled = [compile_stop_regex(p) for p in self.patterns]
        self.frontier = 0  # no match can start before this position of the text

    def search(self, text: str) -> tuple[int, int, str] | None:
        """The leftmost match in `text` (which extends the text of earlier calls) as
        `(start, end, pattern)`, or None after advancing the frontier. Raises
        `StopRegexTimeout` when over budget."""
        deadline = time.monotonic() + SEARCH_BUDGET_S
        try:
            return self._search(text, deadline)
        except TimeoutError:  # the regex engine's own timeout
            raise StopRegexTimeout(f"stop_regex matching took over {SEARCH_BUDGET_S} s") from None

    def _search(self, text: str, deadline: float) -> tuple[int, int, str] | None:
        best: tuple[int, int, str] | None = None
        for pattern, compiled in zip(self.patterns, self._compiled, strict=True):
            m = compiled.search(text, self.frontier, timeout=_remaining(deadline))
            if m is not None and (best is None or m.start() < best[0]):
                best = (m.start(), m.end(), pattern)
        if best is not None:
            return best
        frontier = len(text)
        for compiled in self._compiled:
            m = compiled.search(text, self.frontier, partial=True, timeout=_remaining(deadline))
            if m is not None:
                frontier = min(frontier, m.start())
        self.frontier = frontier
        return None


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left
