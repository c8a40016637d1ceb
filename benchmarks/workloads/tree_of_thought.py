"""Tree of thought on GSM8K-style word problems: fork into plans, fork each plan into solutions.

Paper shape: tree-of-thought search on GSM8K, `fork` at every level so siblings share their
parent's KV; many short generations. Here: a worked-example prefix (~260 tokens) and a seeded
word problem, 3 plans (<= 16 tokens) x 2 solutions each (<= 24 tokens), then a final answer
picked by the model from the candidates (<= 4 tokens): 10 generations per program.
"""

from __future__ import annotations

import random
import re

import radixgen as sgl
from benchmarks.workloads import data
from benchmarks.workloads.base import Args, Workload, expect_list, expect_text

SIZES = {"small": (2, 2, 2), "full": (10, 3, 2)}  # (programs, plans, solutions per plan)
PREFIX = (
    "Solve math word problems. Propose a short plan, carry it out in one line, and end the "
    "solution with the final number.\n\n"
    "Question: Ben has 7 shells. He finds 3 bags with 4 shells in each bag and then gives 2 "
    "shells to his sister. How many shells does Ben have now?\n"
    "Plan: Add the shells from the bags to the shells he has, then subtract the shells he gave "
    "away.\n"
    "Solution: The bags hold 3 x 4 = 12 shells, so Ben has 7 + 12 = 19 shells, and after giving "
    "2 away he has 19 - 2 = 17.\n"
    "Answer: 17\n\n"
    "Question: Mia has 20 cards. She buys 2 boxes with 6 cards in each box and then gives 5 "
    "cards to a friend. How many cards does Mia have now?\n"
    "Plan: Count the new cards, add them, and remove the cards she gave away.\n"
    "Solution: The boxes hold 2 x 6 = 12 cards, 20 + 12 = 32, and 32 - 5 = 27.\n"
    "Answer: 27\n\n"
)


def last_number(text: str) -> str:
    numbers = re.findall(r"-?\d+", text)
    return numbers[-1] if numbers else "?"


@sgl.function
def tree_of_thought(s, question, plans, solutions):
    s += PREFIX + "Question: " + question + "\n"
    plan_forks = s.fork(plans)
    plan_forks += lambda i: f"Plan {i + 1}:" + sgl.gen("plan", max_tokens=16, stop="\n") + "\n"
    groups = []
    for plan in plan_forks:  # each fork waits for its plan only; the others keep generating
        group = plan.fork(solutions)
        group += lambda j: f"Solution {j + 1}:" + sgl.gen("solution", max_tokens=24, stop="\n")
        groups.append(group)
    leaves = []
    for group in groups:
        group.join()
        leaves.extend(group)
    plan_forks.join()
    candidates = [last_number(leaf["solution"]) for leaf in leaves]
    s += "Candidate answers: " + ", ".join(candidates) + "\nAnswer:"
    s += sgl.gen("answer", max_tokens=4, stop="\n")


def make_args(size: str, seed: int = 0) -> list[Args]:
    programs, plans, solutions = SIZES[size]
    rng = random.Random(f"tot-{seed}")
    return [
        {"question": data.word_problem(rng)[0], "plans": plans, "solutions": solutions}
        for _ in range(programs)
    ]


def check(state, args: Args) -> None:
    expect_list(state, "plan", args["plans"])
    expect_text(state, "answer")
    assert "Candidate answers:" in state.text()


def describe(size: str) -> str:
    programs, plans, solutions = SIZES[size]
    return (
        f"{programs} problems, ~260-tok prefix, fork {plans} plans x {solutions} solutions, "
        "outputs <= 24 tok"
    )


WORKLOAD = Workload(
    name="tot",
    title="Tree of thought",
    program=tree_of_thought,
    make_args=make_args,
    check=check,
    describe=describe,
)
