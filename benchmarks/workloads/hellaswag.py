"""HellaSwag: a shared few-shot prefix, then `select` over four endings per question.

Paper shape: 20-shot HellaSwag, one `select` among 4 endings scored from prompt logprobs
(each choice is a prefill over the shared text). Here: 12 seeded shots (~32 tokens each, ~380
token prefix) and one-sentence endings. Needs prompt logprobs (`select`), which llama.cpp's
server cannot give through the OpenAI backend.
"""

from __future__ import annotations

import random

import radixgen as sgl
from benchmarks.workloads import data
from benchmarks.workloads.base import SELECT, Args, Workload, expect_text

SIZES = {"small": 3, "full": 16}  # questions
SHOTS = 12


def item(rng: random.Random) -> tuple[str, list[str], int]:
    """A context, four candidate endings and the index of the right one."""
    who = data.person(rng)
    noun = rng.choice(data.NOUNS)
    context = f"{data.sentence(rng)} {who} walks to the {noun} and"
    endings = [
        f" opens the door of the {noun} slowly.",
        f" {rng.choice(data.VERBS)} the {rng.choice(data.NOUNS)} with a song.",
        f" paints the {rng.choice(data.ADJECTIVES)} {rng.choice(data.NOUNS)} blue.",
        f" counts the {rng.choice(data.ITEMS)} on the table.",
    ]
    order = list(range(4))
    rng.shuffle(order)
    return context, [endings[i] for i in order], order.index(0)


def few_shot_prefix(seed: int) -> str:
    rng = random.Random(f"hellaswag-shots-{seed}")
    text = "Pick the most plausible ending for each story.\n\n"
    for _ in range(SHOTS):
        context, endings, right = item(rng)
        text += context + endings[right] + "\n\n"
    return text


@sgl.function
def hellaswag(s, examples, context, endings):
    s += examples + context
    s += sgl.select("ending", choices=endings)


def make_args(size: str, seed: int = 0) -> list[Args]:
    prefix = few_shot_prefix(seed)
    rng = random.Random(f"hellaswag-questions-{seed}")
    args = []
    for _ in range(SIZES[size]):
        context, endings, _right = item(rng)
        args.append({"examples": prefix, "context": context, "endings": endings})
    return args


def check(state, args: Args) -> None:
    ending = expect_text(state, "ending")
    assert ending in args["endings"], f"select returned {ending!r}, not one of the endings"


def describe(size: str) -> str:
    return f"{SIZES[size]} questions, {SHOTS}-shot prefix (~380 tok), select over 4 endings"


WORKLOAD = Workload(
    name="hellaswag",
    title="HellaSwag (select)",
    program=hellaswag,
    make_args=make_args,
    check=check,
    describe=describe,
    needs=frozenset({SELECT}),
    multi_call=False,
)
