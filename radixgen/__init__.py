"""radixgen: a structured generation language and a RadixAttention serving runtime."""

from radixgen.runtime.config import EngineConfig
from radixgen.runtime.engine import Engine
from radixgen.runtime.sampling_params import InvalidRequestError, SamplingParams

__version__ = "0.1.0"
__all__ = ["Engine", "EngineConfig", "InvalidRequestError", "SamplingParams", "__version__"]
