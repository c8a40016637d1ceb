"""A tiny random-weight LLaVA directory (tiny_llava.py), transformers' model on it, and one
radixgen engine on it (float32, small prefill chunks so an image's placeholder run is cut by a
chunk boundary), shared by the multimodal tests."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_llava import build_llava, png_bytes  # noqa: E402

from radixgen import Engine  # noqa: E402

CHUNK = 32  # < TOKENS_PER_IMAGE: every image straddles a chunk boundary


@pytest.fixture(scope="session")
def llava_dir(tmp_path_factory):
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    path = tmp_path_factory.mktemp("tiny_llava")
    hf, tokenizer = build_llava(path)
    return path, hf, tokenizer


@pytest.fixture(scope="session")
def llava_engine(llava_dir):
    eng = Engine(
        model=str(llava_dir[0]),
        dtype="float32",
        kv_cache_tokens=8192,
        max_running_requests=8,
        chunked_prefill_size=CHUNK,
    )
    yield eng
    eng.shutdown()


@pytest.fixture(scope="session")
def images():
    """Four different pictures as base64 (sizes differ, so resize and crop both matter)."""
    sizes = [(40, 32), (32, 48), (28, 28), (64, 30)]
    return [base64.b64encode(png_bytes(i, size)).decode() for i, size in enumerate(sizes)]
