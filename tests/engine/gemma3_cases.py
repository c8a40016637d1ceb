"""The Gemma 3 prompt set the exactness and sliding-window cache tests share: 5 to ~1,450
tokens, half of them past the 512-token window."""

from __future__ import annotations

NEW_TOKENS = 12
WINDOW = 512

_FACTS = (
    "The lighthouse keeper wrote in his log every evening: the wind, the colour of the sea, the "
    "ships that passed and the birds that rested on the rail. In the autumn storms he counted "
    "the waves that broke over the rocks, and in the long calm of summer he painted the door. "
)


def _numbered(n: int) -> str:
    return " ".join(f"Entry {i}: the value of key {i} is {(i * 37) % 101}." for i in range(n))


PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Shopping list:\n1. apples\n2. bananas\n3.",
    " ".join([_FACTS] * 4) + " What did the keeper paint?",  # ~230 tokens
    _numbered(33) + " The value of key 7 is",  # ~550 tokens: past the window
    " ".join([_FACTS] * 12) + "\n\nIn one sentence, the keeper",  # ~700 tokens
    _numbered(55) + " The value of key 3 is",  # ~900 tokens
    _numbered(88) + " The value of key 52 is",  # ~1,450 tokens
]


def greedy(engine, prompts: list[str]) -> list[list[int]]:
    """NEW_TOKENS greedy tokens per prompt, EOS ignored."""
    outs = engine.generate(
        prompts, {"max_new_tokens": NEW_TOKENS, "temperature": 0, "ignore_eos": True}
    )
    return [out["output_ids"] for out in outs]


def cold_greedy(engine, prompts: list[str]) -> list[list[int]]:
    """`greedy` for each prompt alone on a flushed cache (long prompts prefilled in chunks)."""
    outputs = []
    for prompt in prompts:
        assert engine.flush_cache()
        outputs.append(greedy(engine, [prompt])[0])
    return outputs
