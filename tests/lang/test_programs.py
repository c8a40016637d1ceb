"""Frontend programs, written once and run on every backend (engine, HTTP endpoint, OpenAI).

Assertions are about structure and semantics a 135M model meets: types, shapes, template text,
stop strings, determinism at temperature 0.
"""

from __future__ import annotations

import asyncio
import re

import pytest

import radixgen as sgl
from radixgen.lang.interpreter import ProgramError

CHATML_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


@sgl.function
def roles(s):
    s += sgl.system("You are a helpful assistant.")
    with s.user():
        s += "Say hello."
    s += sgl.assistant_begin()
    s += sgl.gen("reply", max_tokens=6)
    s += sgl.assistant_end()


def test_roles_render_with_the_template_and_messages(backend):
    state = roles.run(backend=backend, temperature=0)
    assert state.error() is None
    reply = state["reply"]
    assert isinstance(reply, str) and reply and "<|im_end|>" not in reply
    assert state.text() == (
        CHATML_SYSTEM
        + "<|im_start|>user\nSay hello.<|im_end|>\n"
        + f"<|im_start|>assistant\n{reply}<|im_end|>\n"
    )
    assert state.messages() == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": reply.lstrip()},
    ]


@sgl.function
def multi_turn(s, first, second):
    s += sgl.user(first)
    s += sgl.assistant(sgl.gen("a1", max_tokens=6))
    s += sgl.user(second)
    s += sgl.assistant(sgl.gen("a2", max_tokens=6))


def test_multi_turn_is_deterministic_at_temperature_zero(backend):
    runs = [
        multi_turn.run(first="Hi!", second="And again?", backend=backend, temperature=0)
        for _ in range(2)
    ]
    assert runs[0].text() == runs[1].text()
    state = runs[0]
    assert [m["role"] for m in state.messages()] == ["user", "assistant"] * 2
    # the second turn's prompt contained the first answer
    assert state.text().index(state["a1"]) < state.text().index("And again?")


@sgl.function
def few_shot(s, question):
    s += "Q: What is 1+1?\nA: 2\n\nQ: What is 2+2?\nA: 4\n\n"
    s += "Q: " + question + "\nA:" + sgl.gen("answer", max_tokens=8, stop=["\n", "Q:"])


def test_few_shot_answer_stops_at_stop_strings(backend):
    state = few_shot.run(question="What is 3+3?", backend=backend, temperature=0)
    answer = state["answer"]
    assert isinstance(answer, str) and "\n" not in answer and "Q:" not in answer
    assert state.text().endswith("A:" + answer)


@sgl.function
def animals(s, stop_regex):
    s += sgl.user("Name three animals.")
    s += sgl.assistant_begin()
    s += sgl.gen("answer", max_tokens=30, stop_regex=stop_regex)


def test_gen_stops_at_a_stop_regex(backend):
    """The regex reaches every backend (the OpenAI one as the `stop_regex` extension); the
    answer, streamed or not, ends where the unstopped answer first matches."""
    item = r"\n\d+\."
    free = animals.run(stop_regex=None, backend=backend, temperature=0)["answer"]
    match = re.search(item, free)
    assert match, free  # the precondition: a numbered list with a second item
    assert (
        animals.run(stop_regex=item, backend=backend, temperature=0)["answer"]
        == free[: match.start()]
    )
    streamed = animals.run(stop_regex=[item], backend=backend, temperature=0, stream=True)
    assert "".join(streamed.text_iter("answer")) == free[: match.start()]


@sgl.function
def choose(s):
    s += sgl.user("Is fire hot? Answer yes or no.")
    s += sgl.assistant(sgl.select("verdict", ["yes", "no"]))
    s += sgl.user("Pick a color.")
    s += sgl.assistant(sgl.gen("color", choices=["red", "green", "blue"]))


def test_select_appends_one_of_the_choices(backend):
    state = choose.run(backend=backend)
    assert state.error() is None
    assert state["verdict"] in ("yes", "no") and state["color"] in ("red", "green", "blue")
    assert f"assistant\n{state['verdict']}<|im_end|>" in state.text()
    meta = state.get_meta_info("color")
    assert len(meta["normalized_prompt_logprobs"]) == 3
    assert all(lp <= 0 for lp in meta["normalized_prompt_logprobs"])


@sgl.function
def tips(s, mode):
    s += "Here are two tips for staying healthy.\n"
    forks = s.fork(2)
    for i, f in enumerate(forks):
        f += f"Tip {i + 1}:" + sgl.gen("tip", max_tokens=6, stop="\n") + "\n"
    forks.join(mode)
    s += "Done."


def test_fork_join_gathers_branch_variables(backend):
    state = tips.run(mode="gather_variable", backend=backend, temperature=0)
    tips_ = state["tip"]
    assert isinstance(tips_, list) and len(tips_) == 2
    assert all(isinstance(t, str) and "\n" not in t for t in tips_)
    assert state.text() == "Here are two tips for staying healthy.\nDone."


def test_fork_join_concatenates_branch_text(backend):
    state = tips.run(mode="concate_and_append", backend=backend, temperature=0)
    text = state.text()
    assert text.startswith("Here are two tips for staying healthy.\nTip 1:")
    assert text.index("Tip 1:") < text.index("Tip 2:") < text.index("Done.")


@sgl.function
def copy_scope(s):
    s += "Count: 1, 2,"
    with s.copy() as branch:
        branch += sgl.gen("next", max_tokens=3, stop=",")
    s += " and so on."


def test_copy_is_a_joined_one_branch_fork(backend):
    state = copy_scope.run(backend=backend, temperature=0)
    assert isinstance(state["next"], list) and len(state["next"]) == 1
    assert state.text() == "Count: 1, 2, and so on."


@sgl.function
def steps(s):
    s += "List three fruits, one per line.\n"
    seen = []
    for i in range(2):
        s += f"{i + 1}." + sgl.gen("item", max_tokens=5, stop="\n") + "\n"
        seen.append(s["item"])
    return seen


@sgl.function
def queued(s):
    s += "Count: 1, 2," + sgl.gen("n", max_tokens=3, stop=",") + ","
    s += sgl.gen("n", max_tokens=3, stop=",")
    return s["n"]


def test_variable_reuse_reads_each_iterations_value(backend):
    state = steps.run(backend=backend, temperature=0)
    first, second = state.ret_value
    assert state["item"] == second
    text = state.text()
    assert text.index(f"1.{first}\n") < text.index(f"2.{second}\n")
    # two queued gens of one name: reading it waits for the second
    state = queued.run(backend=backend, temperature=0)
    assert state.text().endswith("," + state.ret_value)


@sgl.function
def scoped(s, topic):
    with s.var_scope("line"):
        s += "Topic: " + topic + ". Slogan:" + sgl.gen("slogan", max_tokens=6, stop="\n")
    s += "\n"


def test_var_scope_and_bind(backend):
    state = scoped.bind(topic="tea").run(backend=backend, temperature=0)
    assert state["line"] == "Topic: tea. Slogan:" + state["slogan"]
    assert "slogan" in state and "nope" not in state


def test_streaming_yields_the_final_text_in_pieces(backend):
    state = multi_turn.run(first="Hi!", second="Bye.", backend=backend, temperature=0, stream=True)
    pieces = list(state.text_iter())
    assert len(pieces) > 2 and "".join(pieces) == state.text()
    again = multi_turn.run(first="Hi!", second="Bye.", backend=backend, temperature=0, stream=True)
    var_pieces = list(again.text_iter("a2"))
    assert "".join(var_pieces) == again["a2"] == state["a2"]

    async def collect():
        third = multi_turn.run(
            first="Hi!", second="Bye.", backend=backend, temperature=0, stream=True
        )
        return [p async for p in third.text_async_iter("a1")], third

    async_pieces, third = asyncio.run(collect())
    assert "".join(async_pieces) == third["a1"] == state["a1"]


def test_run_batch_returns_states_in_order(backend):
    questions = ["What is 3+3?", "What is 5+5?", "What is 7+7?"]
    states = few_shot.run_batch(
        [{"question": questions[0]}, (questions[1],), {"question": questions[2]}],
        backend=backend,
        temperature=0,
        num_threads=3,
        progress_bar=True,
    )
    assert len(states) == 3
    for question, state in zip(questions, states, strict=True):
        assert state.error() is None
        assert f"Q: {question}\nA:" in state.text()
        assert isinstance(state["answer"], str) and "\n" not in state["answer"]
    generated = list(
        few_shot.run_batch(
            [{"question": q} for q in questions],
            backend=backend,
            temperature=0,
            generator_style=True,
        )
    )
    assert [s["answer"] for s in generated] == [s["answer"] for s in states]


@sgl.function
def broken(s):
    s += "Hello" + sgl.gen("bad", max_tokens=4, top_p=5.0)  # rejected by every backend
    s += sgl.gen("never", max_tokens=4)
    return s["bad"]


def test_backend_errors_surface_through_the_state(backend):
    state = broken.run(backend=backend)  # returns (no hang) although the read failed
    assert state.error() is not None
    with pytest.raises(ProgramError):
        state["never"]
    assert state.text() == "Hello"


def test_engine_as_default_backend(engine, restore_default_backend):
    sgl.set_default_backend(engine)
    assert sgl.global_config.default_backend.engine is engine
    state = few_shot.run(question="What is 4+4?", temperature=0)
    assert isinstance(state["answer"], str)
    info = sgl.get_server_info()
    assert info["kv_total"] == engine.config.kv_cache_tokens
    assert sgl.flush_cache() is True
