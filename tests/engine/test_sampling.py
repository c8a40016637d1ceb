"""Sampling parameters end to end: validation, seeds, stops, n, logprobs, penalties."""

from __future__ import annotations

import threading

import pytest

from radixgen import InvalidRequestError
from tests.helpers import assert_idle_invariant

CHAT = "<|im_start|>user\nName three animals.<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"temperature": -1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"min_p": 2}, "min_p"),
        ({"frequency_penalty": 3}, "frequency_penalty"),
        ({"presence_penalty": -2.5}, "presence_penalty"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"max_new_tokens": 4, "min_new_tokens": 5}, "min_new_tokens"),
        ({"n": 0}, "n"),
        ({"stop": [""]}, "stop"),
        ({"stop_token_ids": [10**9]}, "stop_token_ids"),
        ({"max_new_tokens": "ten"}, "max_new_tokens"),
        ({"temprature": 0.5}, "temprature"),
        ({"regex": "a+", "json_schema": "{}"}, "regex"),
        ({"max_new_tokens": 10**6}, "max_new_tokens"),
    ],
)
def test_bad_parameters_raise_naming_the_field(engine, params, field):
    with pytest.raises(InvalidRequestError) as err:
        engine.generate("Hello", params)
    assert err.value.param == field
    assert field in str(err.value) or err.value.code == "context_length_exceeded"


def test_bad_input_disturbs_nothing_else(engine):
    results = []
    worker = threading.Thread(
        target=lambda: results.append(
            engine.generate("The capital of France is", {"max_new_tokens": 30, "temperature": 0})
        )
    )
    worker.start()
    for bad in ({"top_p": 7}, {"n": -3}):
        with pytest.raises(InvalidRequestError):
            engine.generate("x", bad)
    with pytest.raises(InvalidRequestError):
        engine.generate(input_ids=[1, 2, 10**7])
    with pytest.raises(InvalidRequestError):
        engine.generate("")
    worker.join(timeout=120)
    assert results and results[0]["meta_info"]["finish_reason"]["type"] in ("stop", "length")
    assert_idle_invariant(engine)


def test_same_seed_same_output_and_other_seed_differs(engine):
    params = {"max_new_tokens": 24, "temperature": 1.0, "top_p": 0.95, "ignore_eos": True}
    a = engine.generate(CHAT, {**params, "sampling_seed": 7})
    b = engine.generate(CHAT, {**params, "sampling_seed": 7})
    # Seeded draws do not depend on the batch the request lands in.
    batch = engine.generate([CHAT, "Other prompt in the batch"], {**params, "sampling_seed": 7})
    c = engine.generate(CHAT, {**params, "sampling_seed": 8})
    assert a["output_ids"] == b["output_ids"] == batch[0]["output_ids"]
    assert a["output_ids"] != c["output_ids"]


def test_n_samples_share_the_prompt_kv(engine):
    engine.flush_cache()
    outs = engine.generate(
        CHAT, {"max_new_tokens": 8, "temperature": 1.0, "n": 4, "sampling_seed": 1}
    )
    assert len(outs) == 4
    assert len({tuple(o["output_ids"]) for o in outs}) > 1
    # One sample computes the prompt; the other three reuse it from the tree.
    cached = sorted(o["meta_info"]["cached_tokens"] for o in outs)
    assert cached[0] == 0 and all(
        c == outs[0]["meta_info"]["prompt_tokens"] - 1 for c in cached[1:]
    )


def test_stop_string_across_tokens_is_trimmed_and_never_streamed(engine):
    base = engine.generate(CHAT, {"max_new_tokens": 30, "temperature": 0})
    text = base["text"]
    assert len(text) > 12
    stop = text[5:9]  # almost surely spans a token boundary or sits inside a token
    out = engine.generate(CHAT, {"max_new_tokens": 30, "temperature": 0, "stop": [stop]})
    assert out["text"] == text[: text.index(stop)]
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop}
    streamed = list(
        engine.generate(CHAT, {"max_new_tokens": 30, "temperature": 0, "stop": stop}, stream=True)
    )
    assert all(stop not in chunk["text"] for chunk in streamed)
    assert all(text.startswith(chunk["text"]) for chunk in streamed)
    assert streamed[-1]["text"] == out["text"]


def test_no_stop_trim_keeps_the_stop_string(engine):
    text = engine.generate(CHAT, {"max_new_tokens": 30, "temperature": 0})["text"]
    stop = text[5:9]
    out = engine.generate(
        CHAT, {"max_new_tokens": 30, "temperature": 0, "stop": stop, "no_stop_trim": True}
    )
    assert out["text"].endswith(stop)


def test_stop_token_ids_eos_and_ignore_eos(engine):
    greedy = engine.generate(CHAT, {"max_new_tokens": 40, "temperature": 0})
    assert greedy["meta_info"]["finish_reason"] == {"type": "stop", "matched": 2}
    assert greedy["output_ids"][-1] == 2 and "<|im_end|>" not in greedy["text"]
    third = greedy["output_ids"][2]
    out = engine.generate(CHAT, {"max_new_tokens": 40, "temperature": 0, "stop_token_ids": [third]})
    assert out["output_ids"] == greedy["output_ids"][:3]
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": third}
    longer = engine.generate(CHAT, {"max_new_tokens": 40, "temperature": 0, "ignore_eos": True})
    assert len(longer["output_ids"]) == 40
    assert longer["meta_info"]["finish_reason"] == {"type": "length", "length": 40}


def test_min_new_tokens_forbids_early_eos(engine):
    greedy = engine.generate(CHAT, {"max_new_tokens": 60, "temperature": 0})
    n = len(greedy["output_ids"])
    out = engine.generate(CHAT, {"max_new_tokens": 60, "temperature": 0, "min_new_tokens": n + 5})
    assert len(out["output_ids"]) >= n + 5
    assert 2 not in out["output_ids"][: n + 5]


def test_output_logprobs_and_top_logprobs(engine):
    out = engine.generate(
        CHAT,
        {"max_new_tokens": 6, "temperature": 0},
        return_logprob=True,
        top_logprobs_num=3,
        return_text_in_logprobs=True,
    )
    meta = out["meta_info"]
    assert [e[1] for e in meta["output_token_logprobs"]] == out["output_ids"]
    for (lp, tid, text), top in zip(
        meta["output_token_logprobs"], meta["output_top_logprobs"], strict=True
    ):
        assert len(top) == 3 and top[0][1] == tid  # greedy: the chosen token is the best
        assert abs(top[0][0] - lp) < 1e-6 and lp <= 0
        assert top[0][0] >= top[1][0] >= top[2][0]
        assert text == engine.tokenizer.decode([tid])
    assert meta["input_token_logprobs"] == []  # logprob_start_len defaults to -1


def test_prompt_logprobs_from_a_start_position(engine):
    ids = engine.tokenizer(CHAT)["input_ids"]
    start = len(ids) - 4
    out = engine.generate(
        CHAT,
        {"max_new_tokens": 1},
        return_logprob=True,
        logprob_start_len=start,
        top_logprobs_num=2,
    )
    entries = out["meta_info"]["input_token_logprobs"]
    assert [e[1] for e in entries] == ids[start:]
    assert entries[0][0] is None and all(e[0] < 0 for e in entries[1:])
    tops = out["meta_info"]["input_top_logprobs"]
    assert tops[0] is None and all(len(t) == 2 for t in tops[1:])


def test_penalties_change_the_distribution(engine):
    prompt = "Repeat after me: apple apple apple apple apple"
    plain = engine.generate(prompt, {"max_new_tokens": 12, "temperature": 0, "ignore_eos": True})
    penalised = engine.generate(
        prompt,
        {"max_new_tokens": 12, "temperature": 0, "ignore_eos": True, "repetition_penalty": 2.0},
    )
    freq = engine.generate(
        prompt,
        {"max_new_tokens": 12, "temperature": 0, "ignore_eos": True, "frequency_penalty": 2.0},
    )
    assert penalised["output_ids"] != plain["output_ids"]
    assert freq["output_ids"] != plain["output_ids"]
    counts = lambda ids: max(ids.count(t) for t in set(ids))  # noqa: E731
    assert counts(freq["output_ids"]) <= counts(plain["output_ids"])


def test_top_k_1_is_greedy_and_min_p_1_is_greedy(engine):
    greedy = engine.generate(CHAT, {"max_new_tokens": 10, "temperature": 0})["output_ids"]
    top_k = engine.generate(CHAT, {"max_new_tokens": 10, "temperature": 1.5, "top_k": 1})
    min_p = engine.generate(CHAT, {"max_new_tokens": 10, "temperature": 1.0, "min_p": 1.0})
    assert top_k["output_ids"] == greedy == min_p["output_ids"]


async def _collect_async(engine, prompt):
    stream = await engine.async_generate(
        prompt, {"max_new_tokens": 8, "temperature": 0}, stream=True
    )
    return [chunk async for chunk in stream]


def test_async_generate_and_async_stream(engine):
    import asyncio

    single = asyncio.run(engine.async_generate(CHAT, {"max_new_tokens": 8, "temperature": 0}))
    chunks = asyncio.run(_collect_async(engine, CHAT))
    assert chunks[-1]["text"] == single["text"]
    assert chunks[-1]["meta_info"]["finish_reason"] is not None
