"""`encode_texts` (the backend's offset-free batch encoder) gives transformers' token ids."""

from __future__ import annotations

import random

import pytest

from radixgen.runtime.model.loader import resolve_model
from radixgen.runtime.tokenizer import encode_texts, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_model("smollm2"))


def test_same_ids_as_calling_the_tokenizer(tokenizer):
    rng = random.Random(0)
    pieces = [*"ab XY\n\t ,.!?'\"-_()<>|/\\09éü漢🙂\u200b\r", "<|im_start|>", "<|im_end|>", "  "]
    texts = ["", " ", "Hello world", "trailing ", "a" * 5000]
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 60))) for _ in range(300)]
    texts.append(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
        )
    )
    for special in (True, False):
        expected = [tokenizer(t, add_special_tokens=special)["input_ids"] for t in texts]
        assert encode_texts(tokenizer, texts, add_special_tokens=special) == expected
