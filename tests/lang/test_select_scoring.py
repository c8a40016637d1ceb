"""`select` decisions and meta_info against a hand computation from the runtime's prompt
logprobs (SGLang's three-request scoring), for all three choice methods."""

from __future__ import annotations

import pytest

import radixgen as sgl
from radixgen.lang.choices import heal_choice_spans
from tests.lang.conftest import prefill

PROMPT = "<|im_start|>user\nIs the sky blue? Answer yes or no.<|im_end|>\n<|im_start|>assistant\n"
CHOICES = ["Yes", "No", "Yes, it is blue."]
METHODS = {
    "token_length_normalized": sgl.token_length_normalized,
    "greedy_token_selection": sgl.greedy_token_selection,
    "unconditional_likelihood_normalized": sgl.unconditional_likelihood_normalized,
}


@sgl.function
def ask(s, method):
    s += sgl.user("Is the sky blue? Answer yes or no.")
    s += sgl.assistant(sgl.select("answer", CHOICES, choices_method=method))


def _by_hand(backend) -> dict:
    """The scores, computed step by step from raw native requests."""
    prompt_len = prefill(backend, {"text": PROMPT, "sampling_params": {"max_new_tokens": 0}})[
        "meta_info"
    ]["prompt_tokens"]
    outs = prefill(
        backend,
        {
            "text": [PROMPT + c for c in CHOICES],
            "sampling_params": {"max_new_tokens": 0, "temperature": 0},
            "return_logprob": True,
            "return_text_in_logprobs": True,
            "logprob_start_len": prompt_len - 2,
        },
    )
    spans = []
    for out in outs:
        span = out["meta_info"]["input_token_logprobs"]
        assert span[0][0] is None  # the window's first position has no logprob
        if PROMPT.endswith(span[0][2]):  # no token healing happened: drop it
            span = span[1:]
        spans.append(span)
    means = []
    for span in spans:
        values = [e[0] for e in span if e[0]]
        means.append(sum(values) / len(values))
    ids = [[e[1] for e in span] for span in spans]
    uncond_outs = prefill(
        backend,
        {
            "input_ids": ids,
            "sampling_params": {"max_new_tokens": 0},
            "return_logprob": True,
            "logprob_start_len": 0,
        },
    )
    uncond = [o["meta_info"]["input_token_logprobs"] for o in uncond_outs]
    lp = [[e[0] or 0.0 for e in span] for span in spans]
    ulp = [[e[0] or 0.0 for e in span] for span in uncond]
    diffs = [
        sum(a - b for a, b in zip(x, y, strict=True)) / len(x) for x, y in zip(lp, ulp, strict=True)
    ]
    return {"spans": spans, "means": means, "lp": lp, "diffs": diffs}


def _greedy(lp: list[list[float]]) -> int:
    width = max(map(len, lp))
    rows = [row + [sum(row) / len(row)] * (width - len(row)) for row in lp]
    alive = list(range(len(rows)))
    for col in range(width):
        best = max(rows[i][col] for i in alive)
        alive = [i for i in alive if rows[i][col] == best]
        if len(alive) == 1:
            break
    return alive[0]


@pytest.mark.parametrize("method", list(METHODS))
def test_select_matches_hand_computation(native_backend, method):
    state = ask.run(method=METHODS[method], backend=native_backend)
    assert state.error() is None
    meta = state.get_meta_info("answer")
    hand = _by_hand(native_backend)
    assert meta["normalized_prompt_logprobs"] == pytest.approx(hand["means"], abs=1e-3)
    got_spans = meta["input_token_logprobs"]
    assert [[e[1] for e in s] for s in got_spans] == [[e[1] for e in s] for s in hand["spans"]]
    if method == "token_length_normalized":
        expected = max(range(3), key=lambda i: hand["means"][i])
    elif method == "greedy_token_selection":
        expected = _greedy(hand["lp"])
        assert len(meta["greedy_logprob_matrix"]) == 3
    else:
        expected = max(range(3), key=lambda i: hand["diffs"][i])
        got = meta["normalized_unconditional_prompt_logprobs"]
        assert got == pytest.approx(hand["diffs"], abs=1e-3)
    assert state["answer"] == CHOICES[expected]
    assert state.text().endswith(f"assistant\n{CHOICES[expected]}<|im_end|>\n")


def test_openai_completion_select_scores_like_the_native_backend(openai_backend, runtime_backend):
    """Echo+logprobs scoring on /v1/completions reproduces the native scores."""
    via_openai = ask.run(method=sgl.token_length_normalized, backend=openai_backend)
    via_native = ask.run(method=sgl.token_length_normalized, backend=runtime_backend)
    a, b = via_openai.get_meta_info("answer"), via_native.get_meta_info("answer")
    assert a["normalized_prompt_logprobs"] == pytest.approx(b["normalized_prompt_logprobs"], 1e-3)
    assert via_openai["answer"] == via_native["answer"]
    greedy = ask.run(method=sgl.greedy_token_selection, backend=openai_backend)
    assert greedy["answer"] in CHOICES
    uncond = ask.run(method=sgl.unconditional_likelihood_normalized, backend=openai_backend)
    assert uncond.error() is None and uncond["answer"] in CHOICES


def test_chat_models_cannot_select(openai_chat_backend):
    state = ask.run(method=sgl.token_length_normalized, backend=openai_chat_backend)
    assert isinstance(state.error(), NotImplementedError)


def test_first_entry_rule():
    """A span's first entry is dropped iff its text is a suffix of the prompt."""
    spans = [
        [[None, 1, "ha"], [-1.0, 2, " ha"], [-2.0, 3, "!"]],  # "...ha" ends the prompt: dropped
        [[None, 4, " h"], [-0.5, 5, "aha"], [-1.5, 6, "!"]],  # healed: " h" is not a suffix
    ]
    trimmed, means = heal_choice_spans("I laugh: ha ha", spans)
    assert [e[1] for e in trimmed[0]] == [2, 3] and means[0] == pytest.approx(-1.5)
    assert [e[1] for e in trimmed[1]] == [4, 5, 6] and means[1] == pytest.approx(-1.0)
