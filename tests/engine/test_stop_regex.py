"""`stop_regex` end to end on the real model (greedy, deterministic): the output stops at the
leftmost match across token boundaries, is trimmed like a stop string, reports the pattern, and
a stream never shows text that the final output does not have."""

from __future__ import annotations

import re

import pytest

from radixgen import InvalidRequestError
from radixgen.runtime.stop_regex import StopRegexMatcher

CHAT = "<|im_start|>user\nName three animals.<|im_end|>\n<|im_start|>assistant\n"
GREEDY = {"max_new_tokens": 30, "temperature": 0}
ITEM = r"\n\d+\."  # a newline, a number and a dot: three tokens in this model's vocabulary


@pytest.fixture(scope="module")
def unstopped(engine) -> dict:
    """The unstopped greedy answer (a numbered list of animals)."""
    out = engine.generate(CHAT, GREEDY)
    assert re.search(ITEM, out["text"]), out  # the precondition: the list has a second item
    return out


@pytest.fixture(scope="module")
def base(unstopped) -> str:
    return unstopped["text"]


def _stream(engine, params):
    return list(engine.generate(CHAT, {**GREEDY, **params}, stream=True))


def test_stops_at_the_first_match_across_tokens_and_trims_it(engine, tokenizer, base, unstopped):
    match = re.search(ITEM, base)
    pieces = [tokenizer.decode([t]) for t in tokenizer(match.group())["input_ids"]]
    assert len(pieces) > 1  # the match spans a token boundary
    out = engine.generate(CHAT, {**GREEDY, "stop_regex": ITEM})
    assert out["text"] == base[: match.start()]
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": ITEM}
    # The generation stopped there, long before the unstopped one.
    assert len(out["output_ids"]) < len(unstopped["output_ids"])


def test_no_stop_trim_keeps_the_match(engine, base):
    match = re.search(ITEM, base)
    out = engine.generate(CHAT, {**GREEDY, "stop_regex": [ITEM], "no_stop_trim": True})
    assert out["text"] == base[: match.end()]
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": ITEM}


def test_leftmost_match_of_all_patterns_wins_and_is_reported(engine, base):
    later = re.escape(base[-4:])  # the end of the answer, after the second item
    out = engine.generate(CHAT, {**GREEDY, "stop_regex": [later, ITEM]})
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": ITEM}
    assert out["text"] == base[: re.search(ITEM, base).start()]
    # Against a stop string further on, the regex still wins; a stop string earlier wins.
    out = engine.generate(CHAT, {**GREEDY, "stop_regex": ITEM, "stop": base[-4:]})
    assert out["meta_info"]["finish_reason"]["matched"] == ITEM
    out = engine.generate(CHAT, {**GREEDY, "stop_regex": ITEM, "stop": base[1:3]})
    assert out["meta_info"]["finish_reason"]["matched"] == base[1:3]
    assert out["text"] == base[:1]


@pytest.mark.parametrize("no_stop_trim", [False, True])
def test_stream_never_shows_text_past_the_final_output(engine, no_stop_trim):
    final = engine.generate(CHAT, {**GREEDY, "stop_regex": ITEM, "no_stop_trim": no_stop_trim})
    chunks = _stream(engine, {"stop_regex": ITEM, "no_stop_trim": no_stop_trim})
    assert chunks[-1]["text"] == final["text"]
    assert chunks[-1]["meta_info"]["finish_reason"] == final["meta_info"]["finish_reason"]
    assert all(final["text"].startswith(c["text"]) for c in chunks)
    assert all(b["text"].startswith(a["text"]) for a, b in zip(chunks, chunks[1:], strict=False))


def test_stream_holds_back_from_where_a_match_could_still_start(engine, base, unstopped):
    """`(?s)L.*QQQ` can match from the first "L" on until the end: nothing from there is
    streamed while running, everything is shown when the request ends unmatched."""
    start = base.index("L")
    chunks = _stream(engine, {"stop_regex": "(?s)L.*QQQ"})
    assert chunks[-1]["text"] == base
    assert chunks[-1]["meta_info"]["finish_reason"] == unstopped["meta_info"]["finish_reason"]
    running = [c["text"] for c in chunks[:-1]]
    assert running and all(base[:start].startswith(t) for t in running)
    assert base[:start] in running  # text before the frontier is not held back


@pytest.mark.parametrize(
    "stop_regex", ["(", ["ok", "[unclosed"], "a{2,1}", 7, ["x"] * 17, "x" * 1025]
)
def test_bad_stop_regex_is_rejected_naming_the_field(engine, stop_regex):
    with pytest.raises(InvalidRequestError) as err:
        engine.generate(CHAT, {**GREEDY, "stop_regex": stop_regex})
    assert err.value.param == "stop_regex"


@pytest.mark.parametrize("unset", [[], None])
def test_empty_or_null_stop_regex_is_unset(engine, unstopped, unset):
    out = engine.generate(CHAT, {**GREEDY, "stop_regex": unset})
    assert out["text"] == unstopped["text"]
    assert out["meta_info"]["finish_reason"] == unstopped["meta_info"]["finish_reason"]


def test_each_sample_of_n_stops_on_its_own(engine):
    outs = engine.generate(
        CHAT,
        {"max_new_tokens": 30, "temperature": 1.0, "n": 3, "seed": 7, "stop_regex": r"\s"},
    )
    assert any(o["meta_info"]["finish_reason"].get("matched") == r"\s" for o in outs)
    for out in outs:
        assert not re.search(r"\s", out["text"]), out["text"]


def test_a_too_slow_pattern_ends_only_its_own_request_as_a_client_error(engine, monkeypatch):
    from radixgen.runtime import stop_regex

    monkeypatch.setattr(stop_regex, "SEARCH_BUDGET_S", 0.0)  # every search is over budget
    out = engine.generate(CHAT, {**GREEDY, "stop_regex": ITEM})
    reason = out["meta_info"]["finish_reason"]
    assert reason["type"] == "abort" and reason["status_code"] == 400
    assert "stop_regex" in reason["message"]
    assert engine.generate(CHAT, {**GREEDY, "max_new_tokens": 3})["meta_info"]["finish_reason"]


# --- the matcher's frontier (no model) --------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "text", "frontier"),
    [
        ([r"abc"], "xxab", 2),  # "ab" may become "abc"
        ([r"abc"], "xxabd", 5),  # dead: every position is safe
        ([r"\d+\."], "val 12", 4),
        ([r"a(?=b)"], "xa", 1),  # a lookahead past the end keeps the match open
        ([r"(?<=x)y", r"zz"], "xaz", 2),
        ([r"(?s)L.*Q"], "a Lion\nand more", 2),
    ],
)
def test_frontier_is_the_earliest_possible_match_start(patterns, text, frontier):
    matcher = StopRegexMatcher(patterns)
    assert matcher.search(text) is None
    assert matcher.frontier == frontier


def test_incremental_search_equals_searching_the_whole_text():
    """Feeding a text piece by piece finds the same leftmost match as one search of each
    prefix (the search resumes at the frontier, never earlier)."""
    patterns = [r"b.a", r"(ab)+a", r"a(?=bb)", r"\bba"]
    text = "xbbxabab bab bba"
    matcher = StopRegexMatcher(patterns)
    for end in range(1, len(text) + 1):
        found = matcher.search(text[:end])
        whole = [(m.start(), m.end(), p) for p in patterns if (m := re.search(p, text[:end]))]
        expected = min(whole, key=lambda f: f[0], default=None)
        assert found == expected, (text[:end], found, expected)
        if found:
            break
    assert found is not None
