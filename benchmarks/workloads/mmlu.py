"""Few-shot MMLU: a 5-shot prefix per subject, many questions, a one-token answer.

Paper shape: 5-shot MMLU, one `gen` with `max_new_tokens=1`, few-shot prefix up to 1,536
tokens, all questions of a subject share it. Here: seeded multiple-choice reading questions
(~80 tokens each, 4 options) in 2 subjects whose 5-shot prefixes are ~410 tokens, 64 questions
each, submitted subject by subject (as SGLang's MMLU benchmark does). Real MMLU averages ~250
test questions per subject; 64 keeps the cache-off run near a minute.
"""

from __future__ import annotations

import random

import radixgen as sgl
from benchmarks.workloads import data
from benchmarks.workloads.base import Args, Workload, expect_text

SUBJECTS = ["geography", "economics", "history", "engineering"]
SIZES = {"small": (1, 3), "full": (2, 64)}  # (subjects, questions per subject)
SHOTS = 5
LETTERS = "ABCD"


def question(rng: random.Random) -> tuple[str, str]:
    """A reading question with four options, and the correct letter."""
    places = rng.sample(data.PLACES, 4)
    answer = rng.randrange(4)
    context = " ".join(data.sentence(rng) for _ in range(3))
    context += f" The {rng.choice(data.NOUNS)} {rng.choice(data.VERBS)} {places[answer]}."
    lines = [context, "Which place does the last sentence name?"]
    lines += [f"{letter}. {place}" for letter, place in zip(LETTERS, places, strict=True)]
    return "\n".join(lines) + "\nAnswer:", LETTERS[answer]


def few_shot_prefix(subject: str, seed: int) -> str:
    rng = random.Random(f"mmlu-shots-{subject}-{seed}")
    text = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    for _ in range(SHOTS):
        q, a = question(rng)
        text += f"{q} {a}\n\n"
    return text


@sgl.function
def few_shot_mmlu(s, examples, question):
    s += examples + question + sgl.gen("answer", max_tokens=1)


def make_args(size: str, seed: int = 0) -> list[Args]:
    subjects, per_subject = SIZES[size]
    rng = random.Random(f"mmlu-questions-{seed}")
    prefixes = [few_shot_prefix(subject, seed) for subject in SUBJECTS[:subjects]]
    # subject by subject, as SGLang's MMLU benchmark orders them
    return [
        {"examples": prefix, "question": question(rng)[0]}
        for prefix in prefixes
        for _ in range(per_subject)
    ]


def check(state, args: Args) -> None:
    expect_text(state, "answer")


def describe(size: str) -> str:
    subjects, per_subject = SIZES[size]
    return (
        f"{subjects * per_subject} questions in {subjects} subjects, 5-shot prefix (~410 tok) "
        "per subject, 1 output token"
    )


WORKLOAD = Workload(
    name="mmlu",
    title="MMLU (5-shot)",
    program=few_shot_mmlu,
    make_args=make_args,
    check=check,
    describe=describe,
    multi_call=False,
)
