"""The output head's 8-bit blocks for narrow passes: the checkpoint's Q8_0 codes, multiplied as
stored.

SmolLM2's head (the tied embedding, 49,152 x 576) is a third of the model's bytes; a decode step
reads all of it. Its Q8_0 codes are half the bytes of bfloat16 (a quarter of float32), and the
product of a code and its float16 scale is exact in float32, so the 8-bit head computes with the
file's own weights. `Int8Matmul` picks the kernel for the engine's activations, once: the
native block kernel (`block_matmul.py`) for float32, the AVX512-BF16 one (`bf16_block_matmul.py`)
for bfloat16. Logits come out in float32 either way. Wide passes keep the dense head.
"""

from __future__ import annotations

import torch

from radixgen.runtime.kernels.bf16_block_matmul import Bf16BlockMatmulKernel, Bf16Int8Panels
from radixgen.runtime.kernels.block_matmul import BlockMatmulKernel, Int8Blocks, Int8Panels


class Int8Matmul:
    """x [M, K] (the engine's dtype) @ an 8-bit weight's transpose -> [M, N] float32."""

    def __init__(self, kernel: BlockMatmulKernel | Bf16BlockMatmulKernel):
        self._kernel = kernel
        self.dtype = torch.bfloat16 if isinstance(kernel, Bf16BlockMatmulKernel) else torch.float32

    @staticmethod
    def choose(
        device: torch.device,
        dtype: torch.dtype,
        block_matmul: BlockMatmulKernel | None,
        bf16_block_matmul: Bf16BlockMatmulKernel | None,
    ) -> Int8Matmul | None:
        """The 8-bit matmul for `dtype` activations on `device`, or None (the dense head)."""
        if device.type != "cpu":
            return None
        kernel = {torch.float32: block_matmul, torch.bfloat16: bf16_block_matmul}.get(dtype)
        return None if kernel is None else Int8Matmul(kernel)

    def pack(self, blocks: Int8Blocks) -> Int8Panels | Bf16Int8Panels:
        """`blocks` in this kernel's layout."""
        if self.dtype == torch.bfloat16:
            return Bf16Int8Panels.pack(blocks.codes, blocks.scales)
        return blocks.panels()

    def __call__(self, x: torch.Tensor, packed: Int8Panels | Bf16Int8Panels) -> torch.Tensor:
        return self._kernel.int8(x, packed)
