"""`EngineKernels`: which kernel runs each operation, chosen once per engine.

The choice depends on the engine's options (compute dtype, device, `disable_native_kernels`,
`attention_backend`), the model's head size and the host CPU's features, and nothing else: the
model runner builds one `EngineKernels` and hands its parts down (attention kernels to the
attention executor, the element-wise ops and matmuls to the model's layers), so no model code
looks a kernel up by itself. Every native part may be missing (None, or `FusedOps` running its
torch chains); each user keeps a PyTorch path for that case, with the same results.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass

import torch

from radixgen.runtime.config import EngineConfig
from radixgen.runtime.kernels.bf16_block_matmul import (
    Bf16BlockMatmulKernel,
    load_bf16_block_matmul,
)
from radixgen.runtime.kernels.block_matmul import BlockMatmulKernel, load_block_matmul
from radixgen.runtime.kernels.build import load_library
from radixgen.runtime.kernels.cpu import CpuFeatures, cpu_features
from radixgen.runtime.kernels.decode_attention import DTYPES as DECODE_DTYPES
from radixgen.runtime.kernels.decode_attention import DecodeAttentionKernel
from radixgen.runtime.kernels.decode_step import DecodeStepKernel
from radixgen.runtime.kernels.elementwise import FusedOps
from radixgen.runtime.kernels.int4 import Int4Matmul
from radixgen.runtime.kernels.int8 import Int8Matmul
from radixgen.runtime.kernels.segment_attention import (
    SegmentAttentionKernel,
    load_segment_attention,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineKernels:
    """The kernels one engine runs with. None: that operation stays on PyTorch."""

    decode_attention: DecodeAttentionKernel | None  # attention reading the KV pool in place
    segment_attention: SegmentAttentionKernel | None  # AMX attention over KV segments
    elementwise: FusedOps  # norm, SiLU·mul, rotary: native or the torch chains
    block_matmul: BlockMatmulKernel | None  # float32 x Q4/Q8_0 blocks
    bf16_block_matmul: Bf16BlockMatmulKernel | None  # bfloat16 x Q4/Q8_0 blocks (AVX512-BF16)
    int4: Int4Matmul | None  # the 4-bit matmul for the compute dtype (None: dense only)
    int8: Int8Matmul | None  # the 8-bit head's matmul for the compute dtype (None: dense)
    decode_step: DecodeStepKernel | None = None  # a narrow pass in one call, this dtype
    cpu: CpuFeatures | None = None  # the host they were chosen for (None: a CPU-free engine)

    @staticmethod
    def choose(
        config: EngineConfig, head_dim: int, cpu: CpuFeatures | None = None
    ) -> EngineKernels:
        """The kernels for `config` on this host (`cpu`: its features, read if not given), for a
        model whose attention heads are `head_dim` wide."""
        device, dtype = torch.device(config.device), config.torch_dtype
        native = device.type == "cpu" and not config.disable_native_kernels
        if device.type == "cpu" and cpu is None:
            cpu = cpu_features()

        def library(name: str, needs: bool = True) -> ctypes.CDLL | None:
            return load_library(name) if native and needs else None

        decode = None
        if dtype in DECODE_DTYPES and (found := library("decode_attention")) is not None:
            decode = DecodeAttentionKernel(found, config.tuning.extend_block_tokens)
        segment = None
        if config.attention_backend == "auto" and cpu is not None:
            wanted = dtype == torch.bfloat16 and cpu.amx
            segment = load_segment_attention(library("segment_attention", wanted), dtype, head_dim)
        block_matmul = None
        if cpu is not None:
            block_matmul = load_block_matmul(library("block_matmul", cpu.avx2))
        bf16_block_matmul = None
        if cpu is not None and dtype == torch.bfloat16:
            found = library("bf16_block_matmul", cpu.avx512_bf16)
            bf16_block_matmul = load_bf16_block_matmul(found)
        decode_step = None
        if cpu is not None and cpu.avx2 and not config.disable_fused_decode:
            found = library("decode_step")
            if found is not None:
                decode_step = DecodeStepKernel(found, config.tuning.extend_block_tokens)
                decode_step = decode_step if decode_step.available(dtype) else None
        kernels = EngineKernels(
            decode_attention=decode,
            segment_attention=segment,
            elementwise=FusedOps(library("elementwise")),
            block_matmul=block_matmul,
            bf16_block_matmul=bf16_block_matmul,
            int4=Int4Matmul.choose(device, dtype, block_matmul, bf16_block_matmul),
            int8=Int8Matmul.choose(device, dtype, block_matmul, bf16_block_matmul),
            decode_step=decode_step,
            cpu=cpu,
        )
        logger.info("kernels: %s", kernels.describe())
        return kernels

    def describe(self) -> str:
        """One line for the log: which operations run natively, on which CPU."""
        native = [
            name
            for name, present in (
                ("decode_attention", self.decode_attention is not None),
                ("segment_attention", self.segment_attention is not None),
                ("elementwise", self.elementwise.is_native),
                ("block_matmul", self.block_matmul is not None),
                ("bf16_block_matmul", self.bf16_block_matmul is not None),
                ("decode_step", self.decode_step is not None),
            )
            if present
        ]
        where = self.cpu.describe() if self.cpu is not None else "no CPU features"
        return f"native {', '.join(native) or 'none'} on {where}"
