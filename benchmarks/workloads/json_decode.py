"""JSON decoding: extract a city's facts from a paragraph as regex-constrained JSON.

Paper shape: regex-constrained JSON extraction of city facts from Wikipedia pages (one
constrained `gen` per document; keys and punctuation are forced by the regex). Here: seeded
encyclopedia-style paragraphs (~70 tokens) after a one-shot example (~140 tokens), a 5-field
regex whose output is ~45 tokens, about half of them forced.
"""

from __future__ import annotations

import json
import random
import re

import radixgen as sgl
from benchmarks.workloads import data
from benchmarks.workloads.base import CONSTRAINED, Args, Workload, expect_text

SIZES = {"small": 3, "full": 24}  # documents
REGEX = (
    r'\{"name": "[\w ]{1,20}", "country": "[\w ]{1,20}", "population": [0-9]{1,8}, '
    r'"founded": [0-9]{3,4}, "landmark": "[\w ]{1,24}"\}'
)


def document(rng: random.Random) -> tuple[str, dict[str, object]]:
    """A paragraph about a made-up city, and the facts it states."""
    facts = {
        "name": data.proper_name(rng),
        "country": rng.choice(data.COUNTRIES),
        "population": rng.randint(20, 3000) * 1000,
        "founded": rng.randint(900, 1900),
        "landmark": f"{rng.choice(data.ADJECTIVES).capitalize()} {rng.choice(data.NOUNS)}",
    }
    text = (
        f"{facts['name']} is a city in {facts['country']}. It was founded in {facts['founded']} "
        f"and today has a population of {facts['population']}. {data.sentence(rng)} Visitors "
        f"come for the {facts['landmark']}, the best known sight of the city. "
        f"{data.sentence(rng)}"
    )
    return text, facts


def instructions(seed: int) -> str:
    text, facts = document(random.Random(f"json-shot-{seed}"))
    return (
        "Extract the facts about the city from the page as JSON.\n\n"
        f"Page: {text}\nJSON: {json.dumps(facts)}\n\n"
    )


@sgl.function
def json_decode(s, shot, page):
    s += shot + "Page: " + page + "\nJSON: "
    s += sgl.gen("json", max_tokens=64, regex=REGEX)


def make_args(size: str, seed: int = 0) -> list[Args]:
    shot = instructions(seed)
    rng = random.Random(f"json-pages-{seed}")
    return [{"shot": shot, "page": document(rng)[0]} for _ in range(SIZES[size])]


def check(state, args: Args) -> None:
    text = expect_text(state, "json", allow_empty=False)
    assert re.fullmatch(REGEX, text), f"output does not match the regex: {text!r}"
    assert set(json.loads(text)) == {"name", "country", "population", "founded", "landmark"}


def describe(size: str) -> str:
    return f"{SIZES[size]} pages (~70 tok) after a ~140-tok example, regex JSON (~45 tok)"


WORKLOAD = Workload(
    name="json",
    title="JSON decoding (regex)",
    program=json_decode,
    make_args=make_args,
    check=check,
    describe=describe,
    needs=frozenset({CONSTRAINED}),
    multi_call=False,
    prefix_heavy=False,
)
