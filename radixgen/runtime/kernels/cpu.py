"""What the host CPU can run: the vector extensions the kernels choose by, and its name.

PyTorch reports the widest vector ISA its own kernels dispatch to (`get_cpu_capability`);
Linux's /proc/cpuinfo lists every flag, including the ones PyTorch does not report (AVX-512 BF16,
AMX). Where /proc/cpuinfo is missing, only what PyTorch reports is known.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

_CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuFeatures:
    model: str  # "AMD EPYC 7B13", or the platform's processor string
    avx2: bool
    avx512f: bool
    avx512_bf16: bool
    amx: bool  # AMX tiles with bfloat16 products (amx_tile and amx_bf16)
    torch_capability: str  # what PyTorch's kernels dispatch to: "AVX512", "AVX2", "DEFAULT", ...

    @property
    def flags(self) -> tuple[str, ...]:
        """The kernel-relevant flags present, by their /proc/cpuinfo names."""
        names = ("avx2", "avx512f", "avx512_bf16", "amx")
        return tuple(name for name in names if getattr(self, name))

    def describe(self) -> str:
        """The CPU named for a measurement record: "AMD EPYC (avx2 avx512f avx512_bf16)"."""
        return f"{self.model} ({' '.join(self.flags) or 'no avx2'})"

    @staticmethod
    def parse(cpuinfo: str, torch_capability: str) -> CpuFeatures:
        """From the text of /proc/cpuinfo ("" where there is none) and PyTorch's capability."""
        fields: dict[str, str] = {}
        for line in cpuinfo.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in fields:  # the first processor speaks for all
                fields[key.strip()] = value.strip()
        flags = set(fields.get("flags", "").split())
        wide = torch_capability == "AVX512"
        return CpuFeatures(
            model=fields.get("model name") or platform.processor() or platform.machine(),
            avx2="avx2" in flags or torch_capability in ("AVX2", "AVX512"),
            avx512f="avx512f" in flags or wide,
            avx512_bf16="avx512_bf16" in flags,
            amx={"amx_tile", "amx_bf16"} <= flags,
            torch_capability=torch_capability,
        )


@functools.cache
def cpu_features() -> CpuFeatures:
    """This host's CPU (read once: it does not change while the process runs)."""
    try:
        cpuinfo = _CPUINFO.read_text()
    except OSError:
        cpuinfo = ""
    return CpuFeatures.parse(cpuinfo, torch.backends.cpu.get_cpu_capability())
