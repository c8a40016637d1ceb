"""Compiling a kernel's C source on first use, and caching the shared object.

A kernel is built once per machine with the system C compiler (`$CC`, else `cc`) for the host CPU
(`-march=native`) and OpenMP, and cached under `$RADIXGEN_KERNEL_CACHE` (default
`~/.cache/radixgen/kernels`), keyed by a hash of its source, the other kernels' sources it
includes, the package's headers, the flags and the compiler. The shared object links
`libgomp.so.1`; torch has already loaded its own copy under that name, so the kernel's threads
are torch's threads. Calls go through `ctypes.PyDLL`, which
keeps the GIL like any torch operator (releasing it would let other Python threads delay every
return).

Building is optional: without a compiler or on a failed build, `load_library` returns None and
the caller keeps its torch path. Whether to try at all is the engine's choice
(`EngineConfig.disable_native_kernels`, see `engine_kernels.py`), not this module's.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).parent
BASE_FLAGS = ["-O3", "-ffast-math", "-fopenmp", "-fPIC", "-shared"]
# Tried in order: the host's full instruction set with whole AVX-512 vectors (x86), the host's
# instruction set, the compiler's default target.
TARGET_FLAGS = (["-march=native", "-mprefer-vector-width=512"], ["-march=native"], [])
_INCLUDED_SOURCE = re.compile(rb'^#include "(\w+\.c)"', re.MULTILINE)


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "radixgen" / "kernels"
    return Path(os.environ.get("RADIXGEN_KERNEL_CACHE", default))


def _cache_key(name: str, compiler: str, flags: list[str]) -> str:
    source = (SOURCE_DIR / f"{name}.c").read_bytes()
    digest = hashlib.sha256(source)
    for included in _INCLUDED_SOURCE.findall(source):  # a kernel built from others' sources
        digest.update(included + (SOURCE_DIR / included.decode()).read_bytes())
    for header in sorted(SOURCE_DIR.glob("*.h")):  # every kernel may include any header
        digest.update(header.name.encode() + header.read_bytes())
    digest.update(" ".join([compiler, *flags, platform.machine()]).encode())
    return digest.hexdigest()[:16]


def build(name: str, compiler: str, flags: list[str]) -> Path:
    """Compile <name>.c into the cache (atomically) unless already there; returns its path."""
    target = cache_dir() / f"{name}-{_cache_key(name, compiler, flags)}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        subprocess.run(
            [compiler, *flags, str(SOURCE_DIR / f"{name}.c"), "-o", str(built), "-lm"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        os.replace(built, target)
    return target


def load_library(name: str) -> ctypes.PyDLL | None:
    """The compiled library of <name>.c (built on first use), or None where it cannot be built:
    no C compiler, or every set of target flags failed."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        logger.info("no C compiler: native kernel %s unavailable, using torch", name)
        return None
    return _load(name, compiler)


@functools.cache
def _load(name: str, compiler: str) -> ctypes.PyDLL | None:
    """One handle per library and compiler for the process: dlopen would share the code anyway,
    and `binding.bind` sets the argtypes of its functions once."""
    errors = []
    for target_flags in TARGET_FLAGS:
        try:
            return ctypes.PyDLL(str(build(name, compiler, [*BASE_FLAGS, *target_flags])))
        except (OSError, subprocess.SubprocessError) as exc:
            stderr = getattr(exc, "stderr", b"") or b""
            errors.append(f"{exc} {stderr.decode(errors='replace')[-500:]}")
    logger.warning("native kernel %s failed to build, using torch: %s", name, errors)
    return None
