"""Seeded stand-ins for the paper's datasets: readable English-like text built from word lists.

Nothing here is downloaded. Every generator takes a `random.Random`, so one seed gives the same
text on every run and machine. Lengths are in words; at ~1.3 tokens per word (SmolLM2's BPE)
a 100-word paragraph is about 130 tokens.
"""

from __future__ import annotations

import random


def _words(text: str) -> list[str]:
    return text.split()


NOUNS = _words("""
river market engine garden library bridge harbour village forest council factory school museum
island valley theatre railway castle festival orchard mountain company kitchen hospital station
farm lighthouse workshop canal tower newspaper vineyard observatory mill
""")
ADJECTIVES = _words("""
old quiet busy famous small ancient modern northern coastal crowded remote wealthy green narrow
historic growing popular large
""")
VERBS = _words("""
supplies connects protects attracts employs feeds serves overlooks surrounds replaced inspired
funded restored hosted crossed built
""")
PLACES = [
    "the north bank",
    "the old town",
    "the main square",
    "the coast",
    "the hills",
    "the valley",
    "the harbour front",
    "the city centre",
    "the lake shore",
]
COUNTRIES = ["France", "Chile", "Norway", "Kenya", "Japan", "Canada", "Peru", "Italy", "India"]
FIRST_NAMES = ["Anna", "Marco", "Sofia", "Lukas", "Amara", "Kenji", "Elena", "Tomas", "Priya"]
LAST_NAMES = ["Okafor", "Lindqvist", "Moreau", "Tanaka", "Rossi", "Silva", "Novak", "Haddad"]
SYLLABLES = ["ka", "lo", "mer", "ston", "vel", "ri", "an", "dor", "bu", "sa", "tel", "min", "ar"]
ITEMS = ["apples", "books", "coins", "stamps", "marbles", "pencils", "shells", "cards", "eggs"]


def proper_name(rng: random.Random) -> str:
    """A made-up place name such as "Velridor"."""
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def sentence(rng: random.Random) -> str:
    """One declarative sentence of about 12 words."""
    a, b = rng.sample(NOUNS, 2)
    return (
        f"The {rng.choice(ADJECTIVES)} {a} {rng.choice(VERBS)} the {rng.choice(ADJECTIVES)} "
        f"{b} near {rng.choice(PLACES)}."
    )


def paragraph(rng: random.Random, words: int) -> str:
    """Sentences until about `words` words."""
    out: list[str] = []
    count = 0
    while count < words:
        out.append(sentence(rng))
        count += len(out[-1].split())
    return " ".join(out)


def word_problem(rng: random.Random) -> tuple[str, int]:
    """A GSM8K-shaped arithmetic word problem and its answer."""
    who, item = rng.choice(FIRST_NAMES), rng.choice(ITEMS)
    start, bags, per_bag, given = (
        rng.randint(5, 40),
        rng.randint(2, 6),
        rng.randint(3, 12),
        rng.randint(1, 9),
    )
    text = (
        f"{who} has {start} {item}. {who} buys {bags} boxes with {per_bag} {item} in each box "
        f"and then gives {given} {item} to a friend. How many {item} does {who} have now?"
    )
    return text, start + bags * per_bag - given
