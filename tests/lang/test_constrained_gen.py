"""Constrained gens: `regex`, `json_schema`, `gen_int`, `gen_string` and `dtype` pass through to
the runtime exactly as SGLang sends them (dtype -> REGEX_* plus stops)."""

from __future__ import annotations

import json
import re

import pytest

import radixgen as sgl
from radixgen.lang.backend.native_protocol import apply_dtype
from radixgen.lang.ir import REGEX_BOOL, REGEX_FLOAT, REGEX_INT, REGEX_STR, SglSamplingParams

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


@sgl.function
def constrained(s):
    s += sgl.user("Is water wet? Answer yes or no.")
    s += sgl.assistant(sgl.gen("yn", max_tokens=4, regex=r"(yes|no)"))
    s += sgl.user("Describe a person as JSON.")
    s += sgl.assistant(sgl.gen("person", max_tokens=40, json_schema=json.dumps(PERSON)))
    s += "How many legs does a dog have? " + sgl.gen_int("legs", max_tokens=4)
    s += "\nA quoted word: " + sgl.gen_string("word", max_tokens=8)
    s += "\nIs it true? " + sgl.gen("flag", max_tokens=3, dtype=bool)


def test_constrained_gens_follow_their_constraints(native_backend):
    state = constrained.run(backend=native_backend, temperature=0)
    assert state.error() is None
    assert re.fullmatch(r"(yes|no)", state["yn"])
    person = json.loads(state["person"])
    assert isinstance(person["name"], str) and isinstance(person["age"], int)
    assert re.fullmatch(REGEX_INT, state["legs"]) and int(state["legs"]) >= 0
    assert re.fullmatch(REGEX_STR, state["word"])
    assert re.fullmatch(REGEX_BOOL, state["flag"])


def test_json_schema_accepts_a_dict(native_backend):
    @sgl.function
    def person(s):
        s += "A person as JSON: " + sgl.gen("p", max_tokens=40, json_schema=PERSON)

    state = person.run(backend=native_backend, temperature=0)
    assert state.error() is None
    assert set(json.loads(state["p"])) >= {"name", "age"}


def test_dtype_becomes_a_regex_and_stops():
    params = apply_dtype(SglSamplingParams(stop="x", dtype=int))
    assert params.regex == REGEX_INT and params.stop == ["x", " ", "\n"]
    assert apply_dtype(SglSamplingParams(dtype=float)).regex == REGEX_FLOAT
    assert apply_dtype(SglSamplingParams(dtype="str")).stop == ()
    with pytest.warns(UserWarning, match="dtype"):
        assert apply_dtype(SglSamplingParams(regex="a+", dtype=bool)).regex == REGEX_BOOL
    with pytest.raises(ValueError, match="invalid dtype"):
        apply_dtype(SglSamplingParams(dtype=list))
    with pytest.raises(ValueError, match="invalid regex"):
        sgl.gen("x", regex="(")


@sgl.function
def constrained_completion(s):
    s += "Is water wet? Answer: " + sgl.gen("yn", max_tokens=4, regex=r"(yes|no)")
    s += "\nA person as JSON: " + sgl.gen("person", max_tokens=40, json_schema=PERSON)


@sgl.function
def constrained_chat(s):
    s += sgl.user("Describe a person as JSON.")
    s += sgl.assistant(sgl.gen("person", max_tokens=40, json_schema=PERSON))


def test_openai_backend_sends_constraints(openai_backend, openai_chat_backend):
    """Regex and schema reach an OpenAI-compatible server (extensions on completions, the
    standard response_format on chat), so outputs are constrained there too."""
    state = constrained_completion.run(backend=openai_backend, temperature=0)
    assert state.error() is None
    assert re.fullmatch(r"(yes|no)", state["yn"])
    assert set(json.loads(state["person"])) == {"name", "age"}
    state = constrained_chat.run(backend=openai_chat_backend, temperature=0)
    assert state.error() is None
    assert set(json.loads(state["person"])) == {"name", "age"}
