"""Structured output over the OpenAI API: response_format, regex / ebnf / choice extensions,
tools, and bad constraints answered with 400 while other requests go on."""

from __future__ import annotations

import json
import re
import threading

import httpx
import jsonschema
import openai
import pytest

from tests.server.conftest import wait_idle

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "pets": {"type": "array", "items": {"enum": ["cat", "dog"]}, "maxItems": 2},
    },
    "required": ["name", "age", "pets"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 10}},
            "required": ["zone"],
        },
    },
}
ASK = [{"role": "user", "content": "Reply with a JSON object with two keys: name and age."}]


def chat(client, model_id, **kwargs):
    kwargs.setdefault("max_tokens", 80)
    kwargs.setdefault("temperature", 0)
    return client.chat.completions.create(model=model_id, messages=ASK, **kwargs)


def test_json_object_and_json_schema(client, model_id):
    out = chat(client, model_id, response_format={"type": "json_object"})
    assert out.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(out.choices[0].message.content), dict)

    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    out = chat(client, model_id, response_format=fmt, temperature=1.0, n=3, seed=7)
    for choice in out.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), PERSON)


def test_json_schema_without_schema_is_400(client, model_id):
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, model_id, response_format={"type": "json_schema", "json_schema": {}})
    assert err.value.body["param"] == "response_format"


def test_regex_ebnf_choice_extensions(client, model_id):
    out = client.completions.create(
        model=model_id,
        prompt="Phone number:",
        max_tokens=24,
        extra_body={"regex": r"\(\d{3}\) \d{3}-\d{4}"},
    )
    assert re.fullmatch(r"\(\d{3}\) \d{3}-\d{4}", out.choices[0].text)
    assert out.choices[0].finish_reason == "stop"

    grammar = 'root ::= "The answer is " ("yes" | "no") "."'
    out = chat(client, model_id, extra_body={"ebnf": grammar}, max_tokens=12)
    assert re.fullmatch(r"The answer is (yes|no)\.", out.choices[0].message.content)

    choices = ["red", "green", "light blue"]
    out = chat(client, model_id, extra_body={"choice": choices}, temperature=1.0, n=4, seed=1)
    assert {c.message.content for c in out.choices} <= set(choices)


def test_structural_tag_response_format(client, model_id):
    """SGLang's response_format: free text, then JSON for the schema after the trigger."""
    animal = {"type": "object", "properties": {"animal": {"type": "string"}}}
    fmt = {
        "type": "structural_tag",
        "structures": [{"begin": "2. ", "schema": {**animal, "required": ["animal"]}, "end": "\n"}],
        "triggers": ["2."],
    }
    messages = [{"role": "user", "content": "Name three animals."}]
    free = client.chat.completions.create(
        model=model_id, messages=messages, max_tokens=40, temperature=0
    )
    text = free.choices[0].message.content
    out = client.chat.completions.create(
        model=model_id, messages=messages, max_tokens=60, temperature=0, response_format=fmt
    )
    content = out.choices[0].message.content
    at = text.index("2.")  # the precondition: the free answer has the trigger
    assert content[:at] == text[:at] and content[at:].startswith("2. {")
    segment = content[at + 3 : content.index("\n", at)]
    jsonschema.validate(json.loads(segment), fmt["structures"][0]["schema"])


def test_two_constraints_are_400(client, model_id):
    with pytest.raises(openai.BadRequestError):
        chat(client, model_id, response_format={"type": "json_object"}, extra_body={"regex": "a"})


def test_streamed_constrained_chat(client, model_id):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    stream = chat(client, model_id, response_format=fmt, stream=True)
    text, reasons = "", []
    for chunk in stream:
        text += chunk.choices[0].delta.content or ""
        reasons.append(chunk.choices[0].finish_reason)
    assert reasons[-1] == "stop" and reasons.count("stop") == 1
    jsonschema.validate(json.loads(text), PERSON)


def test_tool_choice_required_and_named(client, model_id):
    messages = [{"role": "user", "content": "What's the weather in Paris?"}]
    out = client.chat.completions.create(
        model=model_id,
        messages=messages,
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice="required",
        max_tokens=80,
        temperature=0,
    )
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    for call in choice.message.tool_calls:
        tool = {"get_weather": WEATHER_TOOL, "get_time": TIME_TOOL}[call.function.name]
        jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])

    named = {"type": "function", "function": {"name": "get_time"}}
    out = client.chat.completions.create(
        model=model_id,
        messages=messages,
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice=named,
        max_tokens=60,
        temperature=0,
        stream=True,
    )
    calls = [c for chunk in out for c in (chunk.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.name == "get_time"
    jsonschema.validate(
        json.loads(calls[0].function.arguments), TIME_TOOL["function"]["parameters"]
    )


def test_tool_history_and_none(client, model_id):
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Oslo", "unit": "celsius"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "3 degrees, rain"},
    ]
    out = client.chat.completions.create(
        model=model_id, messages=messages, tools=[WEATHER_TOOL], tool_choice="none", max_tokens=8
    )
    assert out.choices[0].message.tool_calls is None
    assert out.choices[0].finish_reason in ("stop", "length")


def test_tool_choice_errors(client, model_id):
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model_id, messages=messages, tool_choice="required")
    assert err.value.body["param"] == "tool_choice"
    missing = {"type": "function", "function": {"name": "nope"}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=model_id, messages=messages, tools=[WEATHER_TOOL], tool_choice=missing
        )
    assert err.value.body["param"] == "tool_choice"


BAD_CONSTRAINTS = [
    ({"regex": "[.*"}, "regex"),
    ({"regex": "(abc"}, "regex"),
    ({"ebnf": "root ::= (("}, "ebnf"),
    ({"ebnf": "start: undefined_rule"}, "ebnf"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "objekt"}}}},
        None,
    ),
    (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"schema": {"type": "object", "properties": {"foo": "bar"}}},
            }
        },
        None,
    ),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"response_format": {"type": "structural_tag", "structures": []}}, "structural_tag"),
]


def test_bad_constraints_fail_alone(server_url, model_id):
    """Each invalid constraint is a 400 with the envelope, while a stream started before them
    runs to completion and the server keeps serving constrained requests."""
    done: dict = {}

    def long_stream():
        body = {
            "model": model_id,
            "messages": [{"role": "user", "content": "Count to fifty."}],
            "max_tokens": 48,
            "ignore_eos": True,
            "stream": True,
        }
        with httpx.stream("POST", f"{server_url}/v1/chat/completions", json=body, timeout=120) as r:
            done["lines"] = [line for line in r.iter_lines() if line]

    thread = threading.Thread(target=long_stream)
    thread.start()
    for extra, param in BAD_CONSTRAINTS:
        body = {"model": model_id, "messages": ASK, "max_tokens": 8, **extra}
        response = httpx.post(f"{server_url}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 400, (extra, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
        if param is not None:
            assert error["param"] == param
    thread.join(timeout=120)
    assert done["lines"][-1] == "data: [DONE]"
    finals = [json.loads(x[6:]) for x in done["lines"][:-1]]
    assert finals[-1]["choices"][0]["finish_reason"] == "length"
    ok = httpx.post(
        f"{server_url}/generate",
        json={"text": "Digits:", "sampling_params": {"regex": r"\d{4}", "max_new_tokens": 8}},
        timeout=60,
    ).json()
    assert re.fullmatch(r"\d{4}", ok["text"])
    wait_idle(server_url)
