"""Tracing a program into a graph, prefix extraction, and compiled (parallel) execution."""

from __future__ import annotations

import re
import threading
import time

import radixgen as sgl
from radixgen.lang.ir import SglConstantText, SglFork, SglGen, SglGetForkItem, SglRoleBegin
from radixgen.lang.tracer import extract_prefix_by_tracing


@sgl.function
def qa(s, question):
    s += sgl.system("Answer briefly.")
    s += sgl.user("Question: " + question)
    s += sgl.assistant(sgl.gen("answer", max_tokens=8))
    forks = s.fork(2)
    forks += lambda i: f"Variant {i}:" + sgl.gen("variant", max_tokens=4)
    forks.join()


def test_trace_records_a_graph():
    tracer = qa.trace()
    kinds = [type(n) for n in tracer.nodes]
    assert kinds[0] is SglRoleBegin and SglGen in kinds and kinds[-1] is SglFork
    assert tracer.variables["answer"].source in tracer.nodes
    assert len(tracer.child_states) == 2
    branch = tracer.child_states[0]
    assert isinstance(branch.nodes[0], SglGetForkItem)
    assert branch.nodes[0].prev_node is tracer.nodes[-1]
    assert isinstance(tracer["variant"], list) and len(tracer["variant"]) == 2
    graph = tracer.print_graph_dfs()
    assert "Gen('answer')" in graph and "Argument(name=question" in graph
    lines = graph.splitlines()
    assert lines[0].startswith("%") and " = " in lines[0]


def test_prefix_extraction_renders_roles_with_the_backend_template(engine_backend):
    prefix = extract_prefix_by_tracing(qa, engine_backend)
    assert prefix == ("<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nQuestion: ")

    @sgl.function
    def fstring(s, name):
        s += "Hello. "
        s += f"My name is {name}."  # f-strings on placeholders stop the trace

    assert extract_prefix_by_tracing(fstring, engine_backend) == "Hello. "


@sgl.function
def expand(s, topic, tip):
    s += (
        "Topic: "
        + topic
        + "\nTip: "
        + tip
        + "\nWhy:"
        + sgl.gen("why", max_tokens=6, stop="\n", temperature=0)
    )


@sgl.function
def advice(s, topic):
    s += "Two tips about " + topic + ".\n"
    first = expand(topic=topic, tip="Sleep eight hours.")
    second = expand(topic=topic, tip="Drink water.")
    s += "1. " + first["why"] + "\n2. " + second["why"] + "\nSummary:"
    s += sgl.gen("summary", max_tokens=6, stop="\n")


class RecordingBackend:
    """Wraps a backend and records when each generate call ran."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[tuple[str, float, float]] = []
        self.lock = threading.Lock()

    def generate(self, s, sampling_params):
        start = time.monotonic()
        out = self.inner.generate(s, sampling_params)
        with self.lock:
            self.calls.append((s.text_, start, time.monotonic()))
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_compiled_program_runs_independent_branches_in_parallel(engine_backend):
    compiled = advice.compile(backend=engine_backend)
    assert len(compiled.streams) == 3  # the program and its two nested calls
    assert "stream  1:" in compiled.print_graph()
    recorder = RecordingBackend(engine_backend)
    state = compiled.run(topic="health", backend=recorder, temperature=0)
    assert state.error() is None
    branch_calls = [c for c in recorder.calls if "\nWhy:" in c[0]]
    assert len(branch_calls) == 2
    (_, start1, end1), (_, start2, end2) = branch_calls
    assert max(start1, start2) < min(end1, end2)  # the two branches overlapped
    text = state.text()
    assert text.startswith("Two tips about health.\n1. ")
    assert text.index("\n2. ") < text.index("\nSummary:")
    assert isinstance(state["summary"], str)
    assert text == advice.run(topic="health", backend=engine_backend, temperature=0).text()
    batch = compiled.run_batch([{"topic": "sleep"}, {"topic": "food"}], backend=engine_backend)
    assert [s.text().split("\n")[0] for s in batch] == [
        "Two tips about sleep.",
        "Two tips about food.",
    ]


def test_compiled_forks(engine_backend):
    @sgl.function
    def forked(s):
        s += "Colors:"
        forks = s.fork(2)
        forks += lambda i: f" option {i}" + sgl.gen("c", max_tokens=2)
        s += " first=" + forks[0]["c"] + " second=" + forks[1]["c"]

    compiled = forked.compile(backend=engine_backend)
    state = compiled.run(backend=engine_backend, temperature=0)
    interpreted = forked.run(backend=engine_backend, temperature=0)
    assert state.error() is None
    assert re.fullmatch(r"Colors: first=.* second=.*", state.text(), re.S)
    assert "option" not in state.text()  # branch text stays in the branches
    assert state.text() == interpreted.text()


def test_trace_is_cloned_per_trace():
    shared = SglConstantText("shared")

    @sgl.function
    def uses_shared(s):
        s += shared
        s += sgl.gen("x")

    a, b = uses_shared.trace(), uses_shared.trace()
    assert a.nodes[0] is not b.nodes[0] and shared.prev_node is None
