"""SGLang programs written once against SGLang's frontend API, run by either frontend.

Each program is built from a frontend module passed as `sgl` (the real `sglang` package or
`radixgen`), so both frontends run the same source. `run_program(sgl, backend, name)` runs one
program greedily on `backend` and returns what it produced as JSON-able data (variables, text,
messages, stream chunks, or `{"error": ...}` when the program failed).

`python -m tests.lang.sglang_programs URL OUT` imports the real `sglang`, points its
`RuntimeEndpoint` at URL (ChatML template, as radixgen picks for SmolLM2) and writes every
program's result to the JSON file OUT. tests/lang/test_sglang_frontend.py runs it in its own
interpreter because `import sglang` patches transformers and sets cache variables process-wide.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

Result = dict[str, Any]
SELECT_CHOICES = ["yes", "no", "maybe not"]
CHOICE_METHODS = (
    "token_length_normalized",
    "greedy_token_selection",
    "unconditional_likelihood_normalized",
)
JSON_REGEX = r'\{"name": "[A-Za-z]{1,10}", "age": [0-9]{1,2}\}'
STOP_REGEX = r"f[a-z]+"
JSON_SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
    }
)


def _finish(state: Any, names: list[str]) -> Result:
    """The program's variables and text, or its error."""
    error = state.error()
    if error is not None:
        return {"error": f"{type(error).__name__}: {error}"}
    return {
        "vars": {name: state[name] for name in names},
        "text": state.text(),
        "finish": {name: state.get_meta_info(name).get("finish_reason") for name in names},
    }


def multi_turn(sgl: Any, backend: Any) -> Result:
    @sgl.function
    def chat(s, question):
        s += sgl.system("Answer in one short sentence.")
        s += sgl.user(question)
        s += sgl.assistant(sgl.gen("first", max_tokens=12))
        s += sgl.user("Say it again in other words.")
        s += sgl.assistant(sgl.gen("second", max_tokens=12))

    state = chat.run(question="What is the capital of France?", temperature=0, backend=backend)
    out = _finish(state, ["first", "second"])
    if "error" not in out:
        out["messages"] = state.messages()
    return out


def stop_strings(sgl: Any, backend: Any) -> Result:
    @sgl.function
    def count(s):
        s += "Count to ten: one, two,"
        s += sgl.gen("one_stop", max_tokens=12, stop=",")
        s += "\nLetters: a b c d"
        s += sgl.gen("two_stops", max_tokens=12, stop=["g", " f"])

    return _finish(count.run(temperature=0, backend=backend), ["one_stop", "two_stops"])


def select(sgl: Any, backend: Any, method: Any) -> Result:
    @sgl.function
    def ask(s):
        s += sgl.user("Is the sky blue on a clear day? Answer yes or no.")
        s += sgl.assistant(sgl.select("answer", choices=SELECT_CHOICES, choices_method=method))
        s += sgl.user("Is grass red?")
        s += sgl.assistant(sgl.gen("again", choices=["yes", "no"], choices_method=method))

    state = ask.run(backend=backend)
    out = _finish(state, ["answer", "again"])
    if "error" not in out:
        out["meta"] = {k: state.get_meta_info(k) for k in ("answer", "again")}
        out.pop("finish")
    return out


class NoneAsZero:
    """Wraps a choices method: a missing logprob (None, the first entry of every span SGLang's
    runtime returns) counts as 0.0, as radixgen's own frontend counts it."""

    def __init__(self, method: Any):
        self.method = method

    @property
    def requires_unconditional_logprobs(self) -> bool:
        return self.method.requires_unconditional_logprobs

    def __call__(self, *, input_token_logprobs, **kwargs):
        spans = [[[0.0 if e[0] is None else e[0], *e[1:]] for e in s] for s in input_token_logprobs]
        return self.method(input_token_logprobs=spans, **kwargs)


def fork_join(sgl: Any, backend: Any) -> Result:
    @sgl.function
    def fruits(s):
        s += "Two lists of fruits.\n"
        forks = s.fork(2)
        for i, f in enumerate(forks):
            f += f"List {i + 1}: apple," + sgl.gen("item", max_tokens=6, stop=["\n", ","])
        forks.join()
        s += "Done."

    state = fruits.run(temperature=0, backend=backend)
    error = state.error()
    if error is not None:
        return {"error": f"{type(error).__name__}: {error}"}
    return {"vars": {"item": state["item"]}, "text": state.text()}


def constrained(sgl: Any, backend: Any) -> Result:
    @sgl.function
    def facts(s):
        s += "The first moon landing was in the year "
        s += sgl.gen("year", max_tokens=8, regex=r"19[0-9]{2}")
        s += ".\nA person's age in years: "
        s += sgl.gen("age", dtype=int, max_tokens=6)
        s += "\nThe number of days in a week: "
        s += sgl.gen_int("days", max_tokens=6)

    return _finish(facts.run(temperature=0, backend=backend), ["year", "age", "days"])


def json_output(sgl: Any, backend: Any) -> Result:
    @sgl.function
    def person(s):
        s += "A person as JSON: "
        s += sgl.gen("person", max_tokens=24, regex=JSON_REGEX)
        s += "\nA city as JSON: "
        s += sgl.gen("city", max_tokens=16, json_schema=JSON_SCHEMA)

    return _finish(person.run(temperature=0, backend=backend), ["person", "city"])


def streaming(sgl: Any, backend: Any) -> Result:
    @sgl.function
    def count(s):
        s += "Count: one, two,"
        s += sgl.gen("rest", max_tokens=8)

    whole = count.run(stream=True, temperature=0, backend=backend)
    chunks = list(whole.text_iter())
    one_var = count.run(stream=True, temperature=0, backend=backend)
    var_chunks = list(one_var.text_iter("rest"))
    out = _finish(whole, ["rest"])
    out["chunks"] = chunks
    out["var_chunks"] = var_chunks
    out["var_value"] = one_var["rest"] if one_var.error() is None else None
    return out


def batch(sgl: Any, backend: Any) -> Result:
    @sgl.function
    def answer(s, question):
        s += sgl.system("You are a terse assistant. Reply with a few words only, no more.")
        s += sgl.user(question)
        s += sgl.assistant(sgl.gen("answer", max_tokens=8))

    questions = ["What color is snow?", "What is 2 + 2?", "Name a fruit."]
    states = answer.run_batch([{"question": q} for q in questions], temperature=0, backend=backend)
    return {"batch": [_finish(state, ["answer"]) for state in states]}


def logprobs(sgl: Any, backend: Any) -> Result:
    @sgl.function
    def capital(s):
        s += "The capital of France is"
        s += sgl.gen(
            "city",
            max_tokens=4,
            return_logprob=True,
            top_logprobs_num=2,
            return_text_in_logprobs=True,
        )

    state = capital.run(temperature=0, backend=backend)
    out = _finish(state, ["city"])
    if "error" not in out:
        meta = state.get_meta_info("city")
        keys = ("completion_tokens", "output_token_logprobs", "output_top_logprobs")
        out["meta"] = {key: meta.get(key) for key in keys}
    return out


def stop_regex(sgl: Any, backend: Any) -> Result:
    @sgl.function
    def count(s):
        s += "Count: one, two, three,"
        s += sgl.gen("rest", max_tokens=12, stop_regex=STOP_REGEX)

    return _finish(count.run(temperature=0, backend=backend), ["rest"])


def server_info(sgl: Any, backend: Any) -> Result:
    info = sgl.get_server_info(backend)
    return {"keys": sorted(info)}


PROGRAMS: dict[str, Callable[[Any, Any], Result]] = {
    "multi_turn": multi_turn,
    "stop_strings": stop_strings,
    **{
        f"select_{name}": (lambda sgl, be, name=name: select(sgl, be, getattr(sgl, name)))
        for name in CHOICE_METHODS
    },
    "select_greedy_none_as_zero": lambda sgl, be: select(
        sgl, be, NoneAsZero(sgl.greedy_token_selection)
    ),
    "fork_join": fork_join,
    "constrained": constrained,
    "json_output": json_output,
    "streaming": streaming,
    "batch": batch,
    "logprobs": logprobs,
    "stop_regex": stop_regex,
    "server_info": server_info,
}


def run_program(sgl: Any, backend: Any, name: str) -> Result:
    """One program's result; an exception outside the program's own error handling is
    reported the same way as a program error."""
    try:
        return json.loads(json.dumps(PROGRAMS[name](sgl, backend)))
    except Exception as exc:  # noqa: BLE001 - reported, compared by the test
        return {"error": f"{type(exc).__name__}: {exc}"}


def main(url: str, out_path: str) -> None:
    import warnings

    import sglang

    warnings.simplefilter("ignore")  # the worker thread warns each program error; we report it
    backend = sglang.RuntimeEndpoint(url, chat_template_name="chatml")
    results = {name: run_program(sglang, backend, name) for name in PROGRAMS}
    with open(out_path, "w") as f:
        json.dump({"version": sglang.__version__, "results": results}, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
