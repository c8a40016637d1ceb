"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest
import torch

from radixgen.runtime.model.decode_kernel import DecodeAttentionKernel, load_decode_attention


@pytest.fixture(scope="session")
def kernel() -> DecodeAttentionKernel:
    """The native decode kernel, built once per session; skips where no C compiler exists."""
    found = load_decode_attention(torch.device("cpu"), torch.bfloat16)
    if found is None:
        pytest.skip("no C compiler for the native kernel")
    return found
