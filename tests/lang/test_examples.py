"""The examples run (with short generations) on the in-process backend."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

import radixgen as sgl

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def example(engine, restore_default_backend, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    sgl.set_default_backend(engine)

    def load(name: str):
        sys.modules.pop(name, None)
        return importlib.import_module(name)

    return load


def test_multi_turn_chat(example):
    state = example("multi_turn_chat").main(max_tokens=8)
    roles = [m["role"] for m in state.messages()]
    assert roles == ["system", "user", "assistant", "user", "assistant"]


def test_few_shot_qa(example):
    states = example("few_shot_qa").main(max_tokens=4)
    assert all("\n" not in s["answer"] for s in states)


def test_tree_of_thought(example):
    state = example("tree_of_thought").main(max_tokens=6)
    assert len(state["plan"]) == 3 and state["best"] in {"1", "2", "3"}


def test_json_extraction(example):
    state = example("json_extraction").main(max_tokens=40)
    assert set(json.loads(state["person"])) >= {"name", "city"}


def test_react_agent(example):
    module = example("react_agent")
    assert module.calculator("7 * 6") == "42" and module.calculator("__import__('os')").startswith(
        "error"
    )
    state = module.main(max_tokens=8)
    assert state.error() is None and "Answer:" in state.text()


def test_batch_classification(example):
    states = example("batch_classification").main()
    assert all(s["label"] in ("positive", "negative") for s in states)
