"""The language and constrained decoding on Gemma 3 270M (its 262k-token SentencePiece vocabulary,
sliding-window layers and hybrid KV pool): a program that forks, selects, and generates under a
regex and a JSON schema, run on the in-process engine. The model is pretrained, not instruction
tuned, and has no chat template, so the program is plain completion text."""

from __future__ import annotations

import json
import re

import radixgen as sgl
from radixgen.lang.backend.engine_backend import EngineBackend

CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 16},
        "population": {"type": "integer", "minimum": 0, "maximum": 99999999},
    },
    "required": ["city", "population"],
}
DOCUMENT = " ".join(f"Entry {i}: the value of key {i} is {(i * 37) % 101}." for i in range(60))


@sgl.function
def city_facts(s, cities):
    s += "Facts about European capitals.\n"
    s += "France's capital is " + sgl.select("capital", choices=["Paris", "Lyon", "Nice"]) + ".\n"
    forks = s.fork(len(cities))
    for fork, city in zip(forks, cities, strict=True):
        fork += f"{city} has about " + sgl.gen("millions", max_tokens=4, regex=r"[0-9]{1,2}")
        fork += " million people.\n"
    s += "As JSON: " + sgl.gen("record", max_tokens=64, json_schema=json.dumps(CITY))
    s["forks"] = [fork["millions"] for fork in forks]


def test_a_forking_constrained_program_runs_on_gemma(gemma_engine):
    state = city_facts.run(
        cities=["Berlin", "Madrid", "Rome"], backend=EngineBackend(gemma_engine), temperature=0
    )
    assert state.error() is None
    assert state["capital"] == "Paris"
    assert all(re.fullmatch(r"[0-9]{1,2}", m) for m in state["forks"])
    record = json.loads(state["record"])
    assert isinstance(record["city"], str) and isinstance(record["population"], int)


def test_a_long_shared_document_past_the_window_serves_a_batch(gemma_engine):
    """Questions after a ~1,000-token document (twice the window) in one `run_batch`: the
    document's KV is shared through the radix tree, the answers follow their regex, and each
    equals the answer the program gives alone on a cold cache."""

    @sgl.function
    def lookup(s, key):
        s += DOCUMENT + f"\nThe value of key {key} is " + sgl.gen("value", regex=r"[0-9]{1,3}")

    backend = EngineBackend(gemma_engine)
    args = [{"key": k} for k in (3, 17, 42, 58)]
    alone = []
    for arg in args:
        assert gemma_engine.flush_cache()
        alone.append(lookup.run(**arg, backend=backend, temperature=0)["value"])
    states = lookup.run_batch(args, backend=backend, temperature=0)
    assert all(state.error() is None for state in states)
    assert [state["value"] for state in states] == alone
    assert all(re.fullmatch(r"[0-9]{1,3}", value) for value in alone)
