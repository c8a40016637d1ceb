"""One request cannot claim the engine: caps on `n`, prompts per request and sequences per
request (prompts x n) are checked when a request is built, before anything is queued, and a
request exactly at the caps is accepted. Nothing here runs the model. (A request larger than
the server's queue is a 400 too: tests/server/test_adversarial.py.)"""

from __future__ import annotations

import pytest

from radixgen.runtime.generate_input import GenerateInput
from radixgen.runtime.validation import InvalidRequestError


def _build(engine, prompts: int, n: int):
    request = GenerateInput.of(
        text=["Hi"] * prompts if prompts > 1 else "Hi",
        sampling_params={"max_new_tokens": 1, "n": n},
    )
    reqs, _ = engine.make_requests(request)
    return reqs


def test_caps_are_the_documented_defaults(engine):
    config = engine.config
    assert (config.max_n, config.max_batch_prompts, config.max_request_sequences) == (
        128,
        256,
        256,
    )


@pytest.mark.parametrize(("prompts", "n"), [(1, 128), (2, 128), (256, 1)])
def test_a_request_at_the_caps_is_built(engine, prompts, n):
    reqs = _build(engine, prompts, n)
    assert len(reqs) == prompts * n
    assert len({r.rid for r in reqs}) == len(reqs)  # every sequence has its own key


@pytest.mark.parametrize(
    ("prompts", "n", "param", "says"),
    [(1, 129, "n", "128"), (3, 100, "n", "300"), (257, 1, "text", "256")],
)
def test_a_request_past_a_cap_is_refused_naming_the_field(engine, prompts, n, param, says):
    with pytest.raises(InvalidRequestError) as caught:
        _build(engine, prompts, n)
    assert caught.value.param == param
    assert says in caught.value.message
