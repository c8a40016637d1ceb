"""What a workload is: an SGLang program, its seeded inputs per size, and a checker.

Each workload module defines one `Workload` (chat.py defines two). The runner calls
`make_args(size)` once, runs `program` once per argument dict, then `check(state, args)` on
every finished program; `check` raises `AssertionError` naming what is missing or malformed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from radixgen.lang.function import SglFunction
from radixgen.lang.state import ProgramState

SIZES = ("small", "full")
"""small: a CI smoke run (a few programs, correctness only); full: the benchmark."""

SELECT = "select"  # needs prompt logprobs for `select` (choices scored by the backend)
CONSTRAINED = "constrained"  # needs regex / json_schema constrained gens

Args = dict[str, Any]


@dataclass(frozen=True)
class Workload:
    name: str
    """Key on the command line (`--workloads mmlu,tot`)."""
    title: str
    """Row label in the tables and chart."""
    program: SglFunction
    make_args: Callable[[str], list[Args]]
    """Size -> one argument dict per program run; deterministic (seeded)."""
    check: Callable[[ProgramState, Args], None]
    """Raises AssertionError if a finished program lacks a variable or has a malformed one."""
    describe: Callable[[str], str]
    """Size -> a one-line description of the workload's shape at that size."""
    needs: frozenset[str] = frozenset()
    """Backend features the program uses (`SELECT`, `CONSTRAINED`); others run it as n/a."""
    multi_call: bool = True
    """More than one model call per program (the llama.cpp target applies to these)."""
    prefix_heavy: bool = True
    """Most prompt tokens are shared; the smoke test checks hit rate vs optimal on these."""

    def size_check(self, size: str) -> None:
        if size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {size!r}")


def expect_text(state: ProgramState, name: str, *, allow_empty: bool = True) -> str:
    """The string variable `name` of a finished program (AssertionError if missing)."""
    assert name in state, f"variable {name!r} missing"
    value = state[name]
    assert isinstance(value, str), f"{name!r} is {type(value).__name__}, not str"
    assert allow_empty or value.strip(), f"{name!r} is empty"
    return value


def expect_list(state: ProgramState, name: str, length: int) -> list[Any]:
    """A fork-gathered variable: a list of `length` strings."""
    assert name in state, f"variable {name!r} missing"
    value = state[name]
    assert isinstance(value, list) and len(value) == length, f"{name!r} is not {length} values"
    assert all(isinstance(v, str) for v in value), f"{name!r} has non-string values"
    return value
