"""ReAct agent with replayed observations: think, act, read the recorded observation, repeat.

Paper shape: ReAct agents on HotpotQA traces: a long few-shot prompt of example trajectories,
then per step one `gen` for "Thought i: ... Action i: ..." (stopping before "Observation") and
the trace's recorded observation appended. Here: a ~470-token prefix with two example
trajectories, seeded questions, 3 steps with <= 24-token thoughts and ~30-token observations.
"""

from __future__ import annotations

import random

import radixgen as sgl
from benchmarks.workloads import data
from benchmarks.workloads.base import Args, Workload, expect_text

SIZES = {"small": (2, 2), "full": (16, 3)}  # (questions, steps)
PREFIX = (
    "Solve a question answering task with interleaving Thought, Action, Observation steps. "
    "Thought can reason about the current situation, and Action can be three types: "
    "Search[entity], which searches the entity on Wikipedia and returns the first paragraph; "
    "Lookup[keyword], which returns the next sentence containing the keyword; and "
    "Finish[answer], which returns the answer and finishes the task.\n\n"
    "Question: Which was built first, the Harbour Tower of Velridor or the Old Bridge of "
    "Kaston?\n"
    "Thought 1: I need to search the Harbour Tower of Velridor and find when it was built.\n"
    "Action 1: Search[Harbour Tower of Velridor]\n"
    "Observation 1: The Harbour Tower of Velridor is a stone lighthouse built in 1721 by the "
    "town council to guide fishing boats into the harbour.\n"
    "Thought 2: The Harbour Tower was built in 1721. Now I need the Old Bridge of Kaston.\n"
    "Action 2: Search[Old Bridge of Kaston]\n"
    "Observation 2: The Old Bridge of Kaston crosses the river near the old town. It was "
    "completed in 1655 after twelve years of work.\n"
    "Thought 3: 1655 is earlier than 1721, so the Old Bridge was built first.\n"
    "Action 3: Finish[the Old Bridge of Kaston]\n\n"
    "Question: Who founded the newspaper that employs Anna Moreau?\n"
    "Thought 1: I need to search Anna Moreau and find which newspaper employs her.\n"
    "Action 1: Search[Anna Moreau]\n"
    "Observation 1: Anna Moreau is a journalist who writes for the Northern Courier, a daily "
    "newspaper printed in the city centre.\n"
    "Thought 2: She writes for the Northern Courier. I need to find its founder.\n"
    "Action 2: Search[Northern Courier]\n"
    "Observation 2: The Northern Courier was founded in 1884 by Lukas Lindqvist, a printer "
    "from the harbour front.\n"
    "Thought 3: The Northern Courier was founded by Lukas Lindqvist.\n"
    "Action 3: Finish[Lukas Lindqvist]\n\n"
)


def trace(rng: random.Random, steps: int) -> tuple[str, list[str]]:
    """A question and the observations its recorded trajectory returned."""
    town, noun, other = data.proper_name(rng), rng.choice(data.NOUNS), rng.choice(data.NOUNS)
    question = f"Which is older, the {noun} of {town} or the {other} of {town}?"
    observations = [
        f"The {noun} of {town} {rng.choice(data.VERBS)} {rng.choice(data.PLACES)}. It dates "
        f"from {rng.randint(1200, 1950)}. {data.sentence(rng)}"
        for _ in range(steps)
    ]
    return question, observations


@sgl.function
def react(s, question, observations):
    s += PREFIX + "Question: " + question + "\n"
    for i, observation in enumerate(observations, start=1):
        s += f"Thought {i}:"
        s += sgl.gen(f"thought_{i}", max_tokens=24, stop=["\nObservation", "\n\n"])
        s += f"\nObservation {i}: {observation}\n"


def make_args(size: str, seed: int = 0) -> list[Args]:
    questions, steps = SIZES[size]
    rng = random.Random(f"react-{seed}")
    args = []
    for _ in range(questions):
        question, observations = trace(rng, steps)
        args.append({"question": question, "observations": observations})
    return args


def check(state, args: Args) -> None:
    for i in range(1, len(args["observations"]) + 1):
        expect_text(state, f"thought_{i}")


def describe(size: str) -> str:
    questions, steps = SIZES[size]
    return (
        f"{questions} questions, ~470-tok few-shot prefix, {steps} steps (thought <= 24 tok, "
        "replayed observation ~30 tok)"
    )


WORKLOAD = Workload(
    name="react",
    title="ReAct agent",
    program=react,
    make_args=make_args,
    check=check,
    describe=describe,
)
