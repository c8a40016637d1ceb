"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from radixgen.runtime.config import EngineConfig
from radixgen.runtime.kernels.decode_attention import DecodeAttentionKernel
from radixgen.runtime.kernels.engine_kernels import EngineKernels


@pytest.fixture(scope="session")
def native_kernels() -> EngineKernels:
    """The kernels a float32 engine on this host would run (head_dim 64), built once."""
    return EngineKernels.choose(EngineConfig(dtype="float32"), head_dim=64)


@pytest.fixture(scope="session")
def kernel(native_kernels) -> DecodeAttentionKernel:
    """The native decode kernel (it serves bfloat16 and float32); skips where no C compiler
    exists."""
    if native_kernels.decode_attention is None:
        pytest.skip("no C compiler for the native kernel")
    return native_kernels.decode_attention
