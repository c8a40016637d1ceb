"""Seeded generators of regexes and JSON schemas for the constrained-decoding tests.

Every generated constraint has a bounded language (string lengths, array sizes and number ranges
are capped), so a correct engine always finishes inside the tests' token budget: an output cut by
`max_new_tokens` is a failure, not bad luck.
"""

from __future__ import annotations

import random
from typing import Any

WORDS = ["red", "green", "blue", "cat", "dog", "New York", "São Paulo", "x-ray", "a.b"]
REGEX_PIECES = [
    r"\d{2,4}",
    r"[a-z]{1,5}",
    r"(cat|dog|bird)",
    r"[A-Z][a-z]{1,6}",
    r"(yes|no)",
    r"-",
    r"@example\.com",
    r"( [0-9]{1,2})?",
    r"\.",
    r" ",
    r"0x[0-9a-f]{2,4}",
]


def random_regex(rng: random.Random) -> str:
    return "".join(rng.choice(REGEX_PIECES) for _ in range(rng.randint(2, 4)))


def random_schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """An object schema: 1-4 properties of mixed types, some optional, nesting up to depth 2."""
    properties: dict[str, Any] = {}
    for i in range(rng.randint(1, 4)):
        properties[f"{rng.choice(['name', 'id', 'tags', 'score', 'kind', 'ok'])}_{i}"] = (
            _random_value(rng, depth)
        )
    names = list(properties)
    required = [n for n in names if rng.random() < 0.7] or names[:1]
    return {"type": "object", "properties": properties, "required": required}


def _random_value(rng: random.Random, depth: int) -> dict[str, Any]:
    # "number" is left out: its fraction digits are unbounded (tested greedily elsewhere).
    kinds = ["string", "integer", "boolean", "enum", "array"]
    if depth < 2:
        kinds.append("object")
    kind = rng.choice(kinds)
    if kind == "string":
        return {"type": "string", "maxLength": rng.randint(1, 10)}
    if kind == "integer":
        low = rng.randint(-50, 50)
        return {"type": "integer", "minimum": low, "maximum": low + rng.randint(1, 500)}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "enum":
        return {"enum": rng.sample(WORDS, rng.randint(2, 4))}
    if kind == "array":
        items = rng.choice([{"type": "integer", "minimum": 0, "maximum": 9}, {"enum": WORDS[:3]}])
        return {"type": "array", "items": items, "minItems": 0, "maxItems": rng.randint(1, 3)}
    return random_schema(rng, depth + 1)
