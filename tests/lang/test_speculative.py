"""API speculative execution against radixgen's OpenAI endpoint: fewer calls, fewer prompt
tokens, same variables."""

from __future__ import annotations

import radixgen as sgl
from radixgen.lang.ir import SglGen, SglSamplingParams
from radixgen.lang.speculative import ChatSpeculation

FORM = "Name: Alice\nAge: 30\nCity: Paris\n\nName: Bob\nAge: 25\nCity: Rome\n\n"


def form_program(spec_tokens: int | None):
    def form(s):
        s += FORM
        s += "Name:" + sgl.gen("name", max_tokens=8, stop="\n")
        s += "\nAge:" + sgl.gen("age", max_tokens=8, stop="\n")
        s += "\nCity:" + sgl.gen("city", max_tokens=8, stop="\n")

    return sgl.function(form, num_api_spec_tokens=spec_tokens)


def test_completion_speculation_saves_calls_and_prompt_tokens(openai_backend):
    usage = openai_backend.token_usage
    usage.reset()
    plain = form_program(None).run(backend=openai_backend, temperature=0)
    assert plain.error() is None
    plain_calls, plain_prompt = usage.requests, usage.prompt_tokens
    usage.reset()
    spec = form_program(48).run(backend=openai_backend, temperature=0)
    assert spec.error() is None
    assert plain_calls == 3
    assert usage.requests < plain_calls
    assert usage.prompt_tokens < plain_prompt
    for name in ("name", "age", "city"):
        assert isinstance(spec[name], str) and spec[name] and "\n" not in spec[name]
    assert spec["name"] == plain["name"]  # same first prompt, greedy
    assert spec.text() == FORM + f"Name:{spec['name']}\nAge:{spec['age']}\nCity:{spec['city']}"


@sgl.function(num_api_spec_tokens=24)
def chat_form(s):
    s += sgl.user("Reply in the format 'Name: <name>' then 'Age: <age>'.")
    s += sgl.assistant("Name:" + sgl.gen("name", stop="\n") + "\nAge:" + sgl.gen("age", stop="\n"))


def test_chat_speculation_answers_a_turn_with_one_call(openai_chat_backend):
    usage = openai_chat_backend.token_usage
    usage.reset()
    state = chat_form.run(backend=openai_chat_backend, temperature=0)
    assert state.error() is None
    assert usage.requests == 1  # two gens, one chat call
    assert isinstance(state["name"], str) and isinstance(state["age"], str)
    turn = state.messages()[-1]
    assert turn["role"] == "assistant" and turn["content"].startswith("Name:")
    assert state["name"] in turn["content"]


def test_chat_models_need_the_gen_right_after_assistant(openai_chat_backend):
    @sgl.function
    def late(s):
        s += sgl.user("Hi")
        s += sgl.assistant("Sure:" + sgl.gen("x", max_tokens=4))

    assert isinstance(late.run(backend=openai_chat_backend).error(), RuntimeError)


def test_chat_gen_after_assistant(openai_chat_backend):
    @sgl.function
    def chat(s):
        s += sgl.system("Be brief.")
        s += sgl.user("Hi")
        s += sgl.assistant(sgl.gen("reply", max_tokens=6))

    state = chat.run(backend=openai_chat_backend, temperature=0)
    assert state.error() is None and state["reply"]
    assert state.messages()[-1] == {"role": "assistant", "content": state["reply"].lstrip()}


def test_speculated_turn_matching():
    spec = ChatSpeculation(max_tokens=32)
    spec.record_fill("Name:")
    spec.record_gen(SglGen("name"), SglSamplingParams(stop="\n"))
    spec.record_fill("\nAge:")
    spec.record_gen(SglGen("age"), SglSamplingParams(stop=["\n"]))
    assert spec.match("Name: Ann\nAge: 31\nextra", strict=True) == [
        "Name:",
        " Ann",
        "\nAge:",
        " 31",
    ]
    assert spec.match("Hello there", strict=True) is None
    assert spec.match("Hello there", strict=False) == ["Name:", "Hello there", "\nAge:", ""]
