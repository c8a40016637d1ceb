"""Retrieve-then-generate RAG pipeline (the DSPy intro program, in SGLang's language).

Paper shape: a DSPy RAG pipeline: a few-shot prompt (demos compiled by DSPy) writes a search
query, a retriever returns passages, and a second call answers from them; every call re-sends
the demos. Here: a ~210-token prefix with two demos, a seeded corpus of 48 passages about
made-up towns, an idf-weighted word-overlap retriever (top 2, in Python, between the calls),
a query of <= 12 tokens and an answer of <= 12 tokens.
"""

from __future__ import annotations

import functools
import math
import random
import re

import radixgen as sgl
from benchmarks.workloads import data
from benchmarks.workloads.base import Args, Workload, expect_text

SIZES = {"small": 2, "full": 20}  # questions
CORPUS_SIZE = 48
TOP_K = 2
PREFIX = (
    "Answer questions with short factoid answers. First write a search query, then read the "
    "retrieved context and answer.\n\n"
    "Question: In which country is the town of Merbu?\n"
    "Search query: Merbu town country\n"
    "Context:\n"
    "[1] Merbu is a quiet town in Norway. It is known for its old lighthouse, which overlooks "
    "the coast. The town was founded in 1402 by Elena Novak.\n"
    "[2] Kalodor is a busy town in Peru. It is known for its market, which serves the hills.\n"
    "Answer: Norway\n\n"
    "Question: Who founded the town of Ristel?\n"
    "Search query: Ristel founder\n"
    "Context:\n"
    "[1] Ristel is a coastal town in Japan. It is known for its canal, which connects the "
    "harbour front. The town was founded in 1288 by Kenji Tanaka.\n"
    "[2] Sabu is a remote town in Chile. It is known for its vineyard.\n"
    "Answer: Kenji Tanaka\n\n"
)


@functools.cache
def corpus(seed: int = 0) -> tuple[tuple[str, str, str, str], ...]:
    """(town, country, founder, passage) for every document of the corpus."""
    rng = random.Random(f"rag-corpus-{seed}")
    docs, towns = [], set()
    while len(docs) < CORPUS_SIZE:
        town = data.proper_name(rng)
        if town in towns:
            continue
        towns.add(town)
        country, founder = rng.choice(data.COUNTRIES), data.person(rng)
        passage = (
            f"{town} is a {rng.choice(data.ADJECTIVES)} town in {country}. It is known for its "
            f"{rng.choice(data.NOUNS)}, which {rng.choice(data.VERBS)} {rng.choice(data.PLACES)}. "
            f"The town was founded in {rng.randint(900, 1900)} by {founder}."
        )
        docs.append((town, country, founder, passage))
    return tuple(docs)


def _terms(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@functools.cache
def _index(seed: int = 0) -> tuple[list[set[str]], dict[str, float]]:
    """Each passage's terms, and every term's inverse document frequency."""
    docs = [_terms(doc[3]) for doc in corpus(seed)]
    df: dict[str, int] = {}
    for terms in docs:
        for term in terms:
            df[term] = df.get(term, 0) + 1
    return docs, {term: math.log(len(docs) / n) for term, n in df.items()}


def retrieve(query: str, k: int = TOP_K) -> list[str]:
    """The `k` passages whose shared words with `query` weigh most (idf; ties: corpus order)."""
    docs, idf = _index()
    terms = _terms(query)
    scores = [sum(idf[t] for t in terms & doc) for doc in docs]
    ranked = sorted(range(len(docs)), key=lambda i: -scores[i])
    return [corpus()[i][3] for i in ranked[:k]]


@sgl.function
def rag_pipeline(s, question):
    s += PREFIX + "Question: " + question + "\n"
    s += "Search query:" + sgl.gen("query", max_tokens=12, stop="\n") + "\n"
    passages = retrieve(question + " " + s["query"])
    s += "Context:\n" + "".join(f"[{i}] {p}\n" for i, p in enumerate(passages, start=1))
    s += "Answer:" + sgl.gen("answer", max_tokens=12, stop="\n")


def make_args(size: str, seed: int = 0) -> list[Args]:
    rng = random.Random(f"rag-questions-{seed}")
    docs = rng.sample(corpus(), SIZES[size])
    templates = ["In which country is the town of {}?", "Who founded the town of {}?"]
    return [{"question": rng.choice(templates).format(doc[0])} for doc in docs]


def check(state, args: Args) -> None:
    expect_text(state, "query")
    expect_text(state, "answer")
    town = args["question"].rstrip("?").split()[-1]
    assert f"] {town} is a" in state.text(), f"the passage about {town} was not retrieved"


def describe(size: str) -> str:
    return (
        f"{SIZES[size]} questions, ~210-tok demo prefix, query (<= 12 tok) -> top-{TOP_K} of "
        f"{CORPUS_SIZE} passages -> answer (<= 12 tok)"
    )


WORKLOAD = Workload(
    name="rag",
    title="RAG pipeline",
    program=rag_pipeline,
    make_args=make_args,
    check=check,
    describe=describe,
)
