"""LLM judge (branch-solve-merge): fork over six quality dimensions of one article, then merge.

Paper shape: an article judged along 6 dimensions, one `fork` branch per dimension (all branches
share the article's KV), then a merge call that reads every judgment and gives a score. Here:
seeded articles of ~620 tokens (the essays of SGLang's llm_judge benchmark average ~3,000
characters), a judgment of <= 16 tokens per dimension (SGLang allows 256), a 2-token score.
"""

from __future__ import annotations

import random

import radixgen as sgl
from benchmarks.workloads import data
from benchmarks.workloads.base import Args, Workload, expect_list, expect_text

SIZES = {"small": (2, 2, 60), "full": (10, 6, 550)}  # (articles, dimensions, article words)
DIMENSIONS = [
    ("Clarity", "is the article easy to follow?"),
    ("Accuracy", "are the statements consistent with each other?"),
    ("Structure", "is the article well organised?"),
    ("Style", "is the writing pleasant to read?"),
    ("Depth", "does the article explain enough detail?"),
    ("Relevance", "does every sentence support the topic?"),
]


@sgl.function
def llm_judge(s, article, dimensions):
    s += "You are an expert editor. Read the article and judge it.\n\nArticle: " + article + "\n"
    forks = s.fork(len(dimensions))
    forks += lambda i: (
        f"\nJudge only the {dimensions[i][0].lower()}: {dimensions[i][1]} Answer in one sentence "
        "and end with END.\nJudgment:" + sgl.gen("judgment", max_tokens=16, stop="END")
    )
    forks.join()
    s += "\nJudgments:\n"
    for (name, _), judgment in zip(dimensions, s["judgment"], strict=True):
        s += f"{name}: {judgment.strip()}\n"
    s += "In summary, on a scale of 1 to 10, I would give the article a score of"
    s += sgl.gen("score", max_tokens=2)


def make_args(size: str, seed: int = 0) -> list[Args]:
    articles, dimensions, words = SIZES[size]
    rng = random.Random(f"judge-{seed}")
    return [
        {"article": data.paragraph(rng, words), "dimensions": DIMENSIONS[:dimensions]}
        for _ in range(articles)
    ]


def check(state, args: Args) -> None:
    expect_list(state, "judgment", len(args["dimensions"]))
    expect_text(state, "score")


def describe(size: str) -> str:
    articles, dimensions, words = SIZES[size]
    return (
        f"{articles} articles (~{round(words * 1.13, -1):.0f} tok), fork over {dimensions} "
        "dimensions (<= 16 tok each), merge score (2 tok)"
    )


WORKLOAD = Workload(
    name="judge",
    title="LLM judge",
    program=llm_judge,
    make_args=make_args,
    check=check,
    describe=describe,
)
