"""Native CPU kernels: C sources in `kernels/`, compiled on first use, called through ctypes.

A kernel is built once per machine with the system C compiler (`$CC`, else `cc`) for the host CPU
(`-march=native`) and OpenMP, and cached under `$RADIXGEN_KERNEL_CACHE` (default
`~/.cache/radixgen/kernels`), keyed by a hash of its source, the flags and the compiler. The
shared object links `libgomp.so.1`; torch has already loaded its own copy under that name, so
the kernel's threads are torch's threads. Calls go through `ctypes.PyDLL`, which keeps the GIL
like any torch operator (releasing it would let other Python threads delay every return).

Everything here is optional: without a compiler, on a failed build, or with
`RADIXGEN_NATIVE_KERNELS=0`, `load_kernel` returns None and callers keep their torch path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

KERNEL_DIR = Path(__file__).parent / "kernels"
_BASE_FLAGS = ["-O3", "-ffast-math", "-fopenmp", "-fPIC", "-shared"]
# Tried in order: the host's full instruction set with whole AVX-512 vectors (x86), the host's
# instruction set, the compiler's default target.
_TARGET_FLAGS = (["-march=native", "-mprefer-vector-width=512"], ["-march=native"], [])


def native_kernels_enabled() -> bool:
    return os.environ.get("RADIXGEN_NATIVE_KERNELS", "1") not in ("0", "false", "no")


def _cache_dir() -> Path:
    default = Path.home() / ".cache" / "radixgen" / "kernels"
    return Path(os.environ.get("RADIXGEN_KERNEL_CACHE", default))


def _build(name: str, compiler: str, flags: list[str]) -> Path:
    """Compile kernels/<name>.c into the cache (atomically) unless already there."""
    source = (KERNEL_DIR / f"{name}.c").read_bytes()
    key = hashlib.sha256(
        source + " ".join([compiler, *flags, platform.machine()]).encode()
    ).hexdigest()[:16]
    target = _cache_dir() / f"{name}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        subprocess.run(
            [compiler, *flags, str(KERNEL_DIR / f"{name}.c"), "-o", str(built), "-lm"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        os.replace(built, target)
    return target


@functools.cache
def load_kernel(name: str) -> ctypes.PyDLL | None:
    """The compiled library of kernels/<name>.c, or None where native kernels are unavailable."""
    if not native_kernels_enabled():
        return None
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        logger.info("no C compiler: native kernel %s unavailable, using torch", name)
        return None
    errors = []
    for target_flags in _TARGET_FLAGS:
        try:
            return ctypes.PyDLL(str(_build(name, compiler, [*_BASE_FLAGS, *target_flags])))
        except (OSError, subprocess.SubprocessError) as exc:
            stderr = getattr(exc, "stderr", b"") or b""
            errors.append(f"{exc} {stderr.decode(errors='replace')[-500:]}")
    logger.warning("native kernel %s failed to build, using torch: %s", name, errors)
    return None
