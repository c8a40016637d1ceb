"""`structural_tag` on the real model: free text until a trigger, then the rest of a
structure's begin, JSON valid for its schema and its end, then free text again."""

from __future__ import annotations

import json

import jsonschema
import pytest
import regex

from radixgen import InvalidRequestError
from radixgen.runtime.sampling_params import SamplingParams

CHAT = "<|im_start|>user\nName three animals.<|im_end|>\n<|im_start|>assistant\n"
ANIMAL = {
    "type": "object",
    "properties": {"animal": {"type": "string", "maxLength": 20}},
    "required": ["animal"],
}
SECOND_ITEM = {
    "type": "structural_tag",
    "structures": [{"begin": "2. ", "schema": ANIMAL, "end": "\n"}],
    "triggers": ["2."],
}
NUMBERED_LINES = {  # every new line is "- <0..99>:" and then free text
    "structures": [
        {"begin": "\n- ", "schema": {"type": "integer", "minimum": 0, "maximum": 99}, "end": ":"}
    ],
    "triggers": ["\n"],
}
TWO_TOOLS = {  # two structures behind one trigger
    "type": "structural_tag",
    "structures": [
        {"begin": "<foo>", "schema": {"type": "integer"}, "end": ""},
        {"begin": "<fun=é>", "schema": {"type": "boolean"}, "end": "</f>"},
    ],
    "triggers": ["<f"],
}


def test_free_text_until_the_trigger_then_json_for_the_schema(engine):
    free = engine.generate(CHAT, {"max_new_tokens": 40, "temperature": 0})["text"]
    out = engine.generate(
        CHAT, {"max_new_tokens": 60, "temperature": 0, "structural_tag": json.dumps(SECOND_ITEM)}
    )
    text = out["text"]
    at = free.index("2.")  # the unconstrained answer has the trigger: the test's precondition
    assert text[:at] == free[:at]  # before the trigger the model writes what it would anyway
    assert text[at:].startswith("2. {")
    end = text.index("\n", at)
    jsonschema.validate(json.loads(text[at + 3 : end]), ANIMAL)
    assert out["meta_info"]["finish_reason"]["type"] == "stop"


def test_sampled_outputs_keep_every_triggered_segment_valid(engine):
    outs = engine.generate(
        CHAT,
        {
            "max_new_tokens": 40,
            "temperature": 1.0,
            "n": 4,
            "seed": 3,
            "structural_tag": NUMBERED_LINES,
        },
    )
    lines = 0
    for out in outs:
        first, *rest = out["text"].split("\n")
        for k, line in enumerate(rest):
            last = k == len(rest) - 1 and out["meta_info"]["finish_reason"]["type"] == "length"
            # The last line may be cut short by max_new_tokens: it must then be a prefix.
            assert regex.fullmatch(r"- (0|[1-9][0-9]?):[^\n]*", line, partial=last), out
            lines += 1
    assert lines > 0  # the model wrote at least one triggered line


@pytest.fixture(scope="module")
def two_tools(engine):
    def feed(text: str) -> tuple[bool, bool | None]:
        """(every token of `text` was allowed, whether the output is then complete)."""
        grammar = engine.grammars.compile(SamplingParams.from_dict({"structural_tag": TWO_TOOLS}))
        ids = engine.tokenizer.encode(text, add_special_tokens=False)
        consumed = grammar.matcher.try_consume_tokens(ids)
        allowed = consumed == len(ids)
        return allowed, grammar.is_accepting if allowed else None

    return feed


@pytest.mark.parametrize(
    ("text", "allowed", "complete"),
    [
        ("plain text, no trigger < f here", True, True),
        ("a <foo>12 then <fun=é>true</f> and more text", True, True),
        ("a <fun=é>false</f><foo>7", True, True),
        ("a <fun=é>true", True, False),  # the end string is missing
        ("a <f", True, False),  # a trigger must go on into a structure
        ("a <fox", False, None),  # after the trigger only a structure's begin may follow
        ('a <foo>"text"', False, None),  # JSON for the wrong schema
        ("a <fun=é>true</g>", False, None),
    ],
)
def test_triggers_dispatch_to_their_structures(two_tools, text, allowed, complete):
    assert two_tools(text) == (allowed, complete)


@pytest.mark.parametrize(
    "tag",
    [
        "{",
        [1],
        {"type": "structural_tag", "format": {"type": "const_string", "value": "x"}},
        {"structures": [], "triggers": ["<a"]},
        {"structures": [{"begin": "<b>", "schema": ANIMAL, "end": "</b>"}], "triggers": ["<a"]},
        {"structures": [{"begin": "<a>", "schema": ANIMAL, "end": ""}], "triggers": ["<a", "<c"]},
        {"structures": [{"begin": "<a>", "schema": "{}", "end": ""}], "triggers": ["<a"]},
        {
            "structures": [{"begin": "<a>", "schema": {"type": "nope"}, "end": ""}],
            "triggers": ["<a"],
        },
        {"structures": [{"begin": "", "schema": ANIMAL, "end": ""}], "triggers": ["<a"]},
    ],
)
def test_bad_structural_tag_is_rejected_naming_the_field(engine, tag):
    with pytest.raises(InvalidRequestError) as err:
        engine.generate(CHAT, {"max_new_tokens": 4, "structural_tag": tag})
    assert err.value.param == "structural_tag", err.value


def test_structural_tag_is_one_constraint_among_the_others(engine):
    with pytest.raises(InvalidRequestError) as err:
        engine.generate(CHAT, {"max_new_tokens": 4, "structural_tag": SECOND_ITEM, "regex": "a"})
    assert err.value.param == "structural_tag"
