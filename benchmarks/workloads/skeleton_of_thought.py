"""Skeleton of thought (tip suggestion): write a skeleton of short tips, then expand them all
in parallel.

Paper shape: skeleton-of-thought on tip generation: one call writes the skeleton, then a `fork`
expands every point at once (the branches share the question and skeleton). Here: seeded topics
behind a shared instruction-and-example prefix (~140 tokens), 3 tips of <= 12 tokens, each
expanded in its own branch to <= 24 tokens.
"""

from __future__ import annotations

import random

import radixgen as sgl
from benchmarks.workloads import data
from benchmarks.workloads.base import Args, Workload, expect_list, expect_text

SIZES = {"small": (2, 2), "full": (16, 3)}  # (topics, tips)
PREFIX = (
    "You are a helpful assistant. When a user asks for tips, first list a few concise tips, "
    "each under 8 words, then expand every tip into two sentences.\n\n"
    "USER: Give some tips for keeping a small garden.\n"
    "ASSISTANT: Okay. Here are 2 concise tips, each under 8 words:\n"
    "1. Water the plants early in the morning\n"
    "2. Pull weeds before they spread\n"
    "Tip 1: Watering early lets the soil absorb moisture before the sun gets hot. The leaves "
    "also dry quickly, which prevents disease.\n"
    "Tip 2: Young weeds come out easily with their roots. Removing them early keeps them from "
    "taking water and light from your plants.\n\n"
)
ACTIVITIES = [
    "visiting",
    "working at",
    "photographing",
    "cleaning",
    "opening a cafe near",
    "studying",
]


def topic(rng: random.Random) -> str:
    return f"{rng.choice(ACTIVITIES)} the {rng.choice(data.ADJECTIVES)} {rng.choice(data.NOUNS)}"


@sgl.function
def skeleton_of_thought(s, topic, tips):
    s += PREFIX + "USER: Give some tips for " + topic + ".\n"
    s += f"ASSISTANT: Okay. Here are {tips} concise tips, each under 8 words:\n"
    for i in range(tips):
        s += f"{i + 1}." + sgl.gen(f"tip_{i}", max_tokens=12, stop=["\n", "."]) + "\n"
    forks = s.fork(tips)
    forks += lambda i: f"Tip {i + 1}:" + sgl.gen("detail", max_tokens=24, stop="\n")
    forks.join()
    for i, detail in enumerate(s["detail"]):
        s += f"Tip {i + 1}:{detail}\n"


def make_args(size: str, seed: int = 0) -> list[Args]:
    topics, tips = SIZES[size]
    rng = random.Random(f"sot-{seed}")
    return [{"topic": topic(rng), "tips": tips} for _ in range(topics)]


def check(state, args: Args) -> None:
    for i in range(args["tips"]):
        expect_text(state, f"tip_{i}")
    expect_list(state, "detail", args["tips"])


def describe(size: str) -> str:
    topics, tips = SIZES[size]
    return f"{topics} topics, ~140-tok prefix, {tips} tips (<= 12 tok) expanded in parallel (<= 24)"


WORKLOAD = Workload(
    name="sot",
    title="Skeleton of thought",
    program=skeleton_of_thought,
    make_args=make_args,
    check=check,
    describe=describe,
)
