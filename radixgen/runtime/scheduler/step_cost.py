"""What a forward step costs, learned from the steps the scheduler runs: the mixed step's prefill
chunk is sized by time, so the gap between two tokens of a stream stays near a target whatever
the CPU, the batch width or the contexts.

A decode or mixed step's seconds are close to linear in four things (measured on 64 ShareGPT
streams, 2 cores: R^2 0.94, median error 6 ms on steps of 60-250 ms):

    seconds ~ base + per_row * decode_tokens + per_context * decode_context / 1000
                   + per_prefill * prefill_tokens

`decode_tokens` is what the running requests extend by (one each, more after a jump-forward),
`decode_context` the KV they attend over (the step reads it all), `prefill_tokens` the chunk.
The coefficients are fitted by exponentially weighted least squares (`DECAY` per step, a small
ridge so a batch whose width never changes still solves), so the model follows the load and the
machine. Until `MIN_STEPS` steps are seen it predicts nothing and the token budget rules alone.
"""

from __future__ import annotations

import numpy as np

DECAY = 0.97  # weight of a step, per later step: the last ~30 steps decide the fit
RIDGE = 1e-6
MIN_STEPS = 8
FEATURES = 4


def _features(decode_tokens: int, decode_context: int, prefill_tokens: int) -> np.ndarray:
    return np.array([1.0, decode_tokens, decode_context / 1000, prefill_tokens])


class StepCostModel:
    """Online linear model of a step's seconds (see the module docstring)."""

    def __init__(self) -> None:
        self.gram = np.zeros((FEATURES, FEATURES))  # sum of w * x x^T
        self.moment = np.zeros(FEATURES)  # sum of w * x * seconds
        self.steps = 0

    def observe(
        self, decode_tokens: int, decode_context: int, prefill_tokens: int, seconds: float
    ) -> None:
        """Record one decode or mixed step that took `seconds`."""
        x = _features(decode_tokens, decode_context, prefill_tokens)
        self.gram = DECAY * self.gram + np.outer(x, x)
        self.moment = DECAY * self.moment + x * seconds
        self.steps += 1

    def coefficients(self) -> np.ndarray | None:
        """(base, per_row, per_context, per_prefill) in seconds, or None before `MIN_STEPS`."""
        if self.steps < MIN_STEPS:
            return None
        return np.linalg.solve(self.gram + RIDGE * np.eye(FEATURES), self.moment)

    def predict(self, decode_tokens: int, decode_context: int, prefill_tokens: int) -> float | None:
        """Seconds of a step of this shape, or None while the model knows too little."""
        coef = self.coefficients()
        if coef is None:
            return None
        return float(_features(decode_tokens, decode_context, prefill_tokens) @ coef)

    def prefill_tokens_within(
        self, seconds: float, decode_tokens: int, decode_context: int
    ) -> int | None:
        """The most prefill tokens a step beside these decodes may carry and still end within
        `seconds` (0 when the decodes alone take longer); None while the model knows too
        little, or when its fit gives prefill no positive cost (then time cannot size it)."""
        coef = self.coefficients()
        if coef is None or coef[3] <= 0:
            return None
        decodes = float(_features(decode_tokens, decode_context, 0) @ coef)
        return max(0, int((seconds - decodes) / coef[3]))
