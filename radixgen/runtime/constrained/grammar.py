"""`Grammar`: one request's position in its compiled grammar.

A thin wrapper over an llguidance matcher with the four questions the scheduler asks: which tokens
may come next (`fill_mask`, used by `TokenMasker`), accept this sampled token, which tokens does
the grammar force from here (jump-forward), and is the output complete.

Forced tokens are llguidance's "fast-forward" tokens: the canonical tokenization of the text the
grammar forces, minus any trailing token that could merge with what the model writes next. So
`{"name": "` at a schema's start yields `{"`, `name`, `":` and leaves ` "` to the model, which
may well write ` "J` as one token. Appending them is exactly what token-by-token decoding would have
been forced to do, in one forward pass instead of several.
"""

from __future__ import annotations

import re
from typing import Any

MAX_ERROR_CHARS = 200
_POSITION = re.compile(r"^(at \d+\(\d+\): )+")
# The GBNF converter's "<what> at line N, '<text before>' ^ '<text after>'": keep "line N".
_EXCERPT = re.compile(r"(line \d+), .* \^ .*$")


def short_error(message: str) -> str:
    """A grammar engine's error as one short line for the caller: the line that says what is
    wrong (a regex parser's `error: ...`), without source excerpts, positions inside the
    generated grammar or the engine's internal state. Full text belongs in the log."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    said = [line.removeprefix("error: ") for line in lines if line.startswith("error:")]
    line = said[-1] if said else (lines[0] if lines else "unknown grammar error")
    line = _EXCERPT.sub(r"\1", _POSITION.sub("", line))
    return line[:MAX_ERROR_CHARS]


class Grammar:
    def __init__(self, matcher: Any):
        self._matcher = matcher  # llguidance.LLMatcher, owned by this request

    def fork(self) -> Grammar:
        """An independent copy at the same position (for `n > 1` samples)."""
        return Grammar(self._matcher.deep_copy())

    @property
    def matcher(self) -> Any:
        return self._matcher

    def accept(self, token: int) -> bool:
        """Advance over a sampled or forced token; False puts the grammar in its error state."""
        return self._matcher.consume_token(token)

    def forced_tokens(self) -> list[int]:
        """Tokens the grammar admits as the only continuation from here (not yet accepted)."""
        return self._matcher.compute_ff_tokens()

    @property
    def is_finished(self) -> bool:
        """Complete: no token but EOS can follow."""
        return self._matcher.is_stopped() and not self._matcher.is_error()

    @property
    def is_accepting(self) -> bool:
        """The output so far is a complete match (more tokens may still be allowed)."""
        return self._matcher.is_accepting()

    @property
    def error(self) -> str | None:
        """Why the grammar failed at this position (for example a lexer limit), or None."""
        if not self._matcher.is_error():
            return None
        return short_error(self._matcher.get_error() or "")
