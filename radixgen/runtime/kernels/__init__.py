"""Native CPU kernels: C sources, their build, one binding layer and a Python wrapper each.

    common.h               what the C sources share (bfloat16 conversion, element types)
    *.c                    one shared object per kernel, compiled on first use (build.py)
    build.py               compile with the system C compiler for this CPU, cache by hash
    binding.py             each entry point's signature, declared once; tensors checked per call
    cpu.py                 the host's vector extensions (AVX2, AVX-512, AMX) and name
    decode_attention.py    attention reading the KV pool in place (decode steps, extends)
    segment_attention.py   attention over KV segments on AMX tiles
    elementwise.py         a layer's element-wise chains (norm, SiLU·mul, rotary) fused
    block_matmul.py        float32 x the file's Q4/Q8_0 blocks; the block layouts
    int4.py                4-bit weights and the matmul that serves each activation dtype
    engine_kernels.py      EngineKernels: the kernels of one engine, chosen once

docs/kernels.md explains how to add a kernel.
"""
