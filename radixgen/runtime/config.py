"""Configuration values for the runtime, as frozen dataclasses.

`ModelConfig` describes a model's architecture (filled by a loader from GGUF metadata or
config.json). `EngineConfig` holds every user-facing engine option; the field docstrings (the
`help` metadata) become the command-line help, so each option is documented once, here.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

import torch

from radixgen.runtime.tuning import Tuning

SCHEDULE_POLICIES = ("lpm", "fcfs", "dfs-weight")
ATTENTION_BACKENDS = ("auto", "native", "reference")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)
SPECULATIVE_ALGORITHMS = ("ngram",)


@functools.cache
def cpu_has_fast_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively: oneDNN's bfloat16 kernels need
    AVX-512 (BF16 or AMX for full speed). Elsewhere (AVX2-only CPUs) PyTorch falls back to a
    generic loop, ~8x slower than its float32 GEMM."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def auto_dtype(device: str) -> str:
    """The compute dtype "auto" picks: bfloat16, except float32 on a CPU without native
    bfloat16 matrix kernels, where float32 is both faster and exact."""
    if torch.device(device).type == "cpu" and not cpu_has_fast_bfloat16():
        return "float32"
    return "bfloat16"


@dataclass(frozen=True)
class VisionConfig:
    """A LLaVA-1.5-style image path: a CLIP vision tower, the layer(s) whose hidden states feed
    the projector (`feature_layers`, indices into [embeddings, layer 1, ..., layer L] as in
    transformers), whether the CLS position is dropped (`select_strategy` "default") or kept
    ("full"), and the linear-act-linear projector into the language model's embeddings."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    image_size: int
    patch_size: int
    num_channels: int
    layer_norm_eps: float
    hidden_act: str  # the tower's MLP activation ("quick_gelu" for CLIP)
    feature_layers: tuple[int, ...]  # one entry: an int vision_feature_layer; several: concat
    select_strategy: str  # "default" (drop CLS) | "full"
    projector_act: str
    projector_bias: bool
    image_token_id: int  # the placeholder token the prompt holds once per image

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens_per_image(self) -> int:
        """Placeholder tokens (and projected feature rows) one image becomes."""
        return self.num_patches + (1 if self.select_strategy == "full" else 0)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a decoder: the Llama family (Llama 2/3, Mistral, SmolLM2, TinyLlama,
    Qwen2), Qwen3 (Llama with QK-norm) and Gemma 3 (sliding-window layers, Gemma norms).

    Sliding windows: layer i attends only to the `sliding_window` most recent positions (itself
    included) when `layer_types[i]` is "sliding_attention"; an empty `layer_types` means every
    layer is global. `rope_local_theta` is the rope base of the sliding layers (None: the same
    as `rope_theta`)."""

    architecture: str  # "llama" | "mistral" | "qwen2" | "qwen3" | "gemma3"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool = False  # Qwen2 has biases on the q/k/v projections
    rope_scaling: dict[str, Any] | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    sliding_window: int | None = None
    layer_types: tuple[str, ...] = ()  # "full_attention" | "sliding_attention", per layer
    rope_local_theta: float | None = None
    query_pre_attn_scalar: float | None = None  # attention scale^-2 (None: head_dim)
    vision: VisionConfig | None = None  # LLaVA-style models: the image path; None: text only

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        if self.layer_types and len(self.layer_types) != self.num_layers:
            raise ValueError(
                f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers"
            )
        if "sliding_attention" in self.layer_types and not self.sliding_window:
            raise ValueError("sliding_attention layers need a sliding_window")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads})"
            )

    def layer_window(self, layer: int) -> int | None:
        """The sliding window of `layer` (None: a global layer)."""
        if self.layer_types and self.layer_types[layer] == "sliding_attention":
            return self.sliding_window
        return None

    @property
    def has_sliding_layers(self) -> bool:
        return "sliding_attention" in self.layer_types


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class EngineConfig:
    """Every engine option. Values are validated on construction; "auto" values are resolved by
    `resolve()`, which returns a new object rather than mutating this one."""

    model: str = _opt("smollm2", "Model: the alias 'smollm2', a .gguf file, or a HF directory.")
    dtype: str = _opt(
        "auto",
        "Weight and activation dtype. 'auto': bfloat16, or float32 on a CPU without native "
        "bfloat16 matrix kernels (no AVX-512), where bfloat16 would run ~8x slower.",
        choices=DTYPE_CHOICES,
    )
    device: str = _opt("cpu", "Torch device to run on.")
    kv_cache_tokens: int = _opt(65536, "Size of the KV pool in tokens (all layers).")
    swa_full_tokens_ratio: float = _opt(
        0.8,
        "Models with sliding-window layers: their window KV gets its own pool of this fraction "
        "of kv_cache_tokens (at least the window plus a prefill batch); window KV that no "
        "request can see any more is freed from it while the global layers' KV stays cached.",
    )
    disable_hybrid_swa_memory: bool = _opt(
        False, "Keep every layer's KV for every cached token (no separate sliding-window pool)."
    )
    max_running_requests: int = _opt(64, "Most requests decoding at once.")
    max_prefill_tokens: int = _opt(4096, "Token budget of one prefill batch.")
    chunked_prefill_size: int = _opt(
        1024, "Prompts longer than this are prefilled in chunks of this size (-1: never)."
    )
    enable_mixed_chunk: bool = _opt(
        True,
        "While requests decode, run each prefill chunk in the same forward pass as one decode "
        "step of every running request (mixed chunked prefill), so decodes never wait whole "
        "prefill steps. --no-enable-mixed-chunk: separate prefill and decode steps.",
    )
    mixed_step_tokens: int = _opt(
        512,
        "Token budget of a mixed step: the running requests' decode tokens plus a prefill chunk "
        "of the rest (at least a quarter of it). It bounds the gap between two tokens of a "
        "stream while prompts arrive.",
    )
    mixed_step_ms: float = _opt(
        120.0,
        "Target time of a mixed step: its prefill chunk is also held to what the scheduler, "
        "from the steps it has timed, expects to fit in this many milliseconds beside the "
        "running decodes (at least 32 tokens). It bounds the gap between two tokens of a "
        "stream on any CPU. 0: the token budget alone.",
    )
    context_length: int | None = _opt(None, "Max prompt+output length (default: the model's).")
    schedule_policy: str = _opt(
        "lpm",
        "Waiting-queue order: longest prefix match, FCFS or DFS weight.",
        choices=SCHEDULE_POLICIES,
    )
    disable_radix_cache: bool = _opt(False, "Run without prefix reuse (the benchmark baseline).")
    disable_jump_forward: bool = _opt(
        False, "Decode grammar-forced text token by token (the constrained-decoding baseline)."
    )
    int4_max_tokens: int | None = _opt(
        None,
        "Forward passes of at most this many tokens multiply by the GGUF file's own 4-bit "
        "weights (Q4_0/Q4_1 blocks, as stored; CPU only), reading far fewer bytes; wider ones "
        "use the dense weights. Default: where the 4-bit kernel stops beating the dense GEMM "
        "(8 for bfloat16, 128 for float32). In float32 the output head likewise multiplies "
        "passes of <= 24 rows by its Q8_0 blocks. 0: always dense (the head too).",
    )
    attention_backend: str = _opt(
        "auto",
        "Attention executor: 'auto' takes the AMX segment kernel where it runs (bfloat16 on a "
        "CPU with AMX, head_dim 64), else 'native': the native in-place kernel with PyTorch's "
        "flash attention; 'reference' runs plain PyTorch (slow; for checking).",
        choices=ATTENTION_BACKENDS,
    )
    disable_native_kernels: bool = _opt(
        False,
        "Run every operation on PyTorch's kernels: build and use none of radixgen's C kernels "
        "(in-place attention, fused element-wise steps, quantized matmuls). Same outputs in "
        "float32 (to rounding), slower. Their build cache: $RADIXGEN_KERNEL_CACHE.",
    )
    disable_fused_decode: bool = _opt(
        False,
        "Run narrow forward passes (decode steps) operation by operation instead of as one "
        "native call for all layers. Same outputs, bit for bit; the fused call saves the "
        "per-operation dispatch (the CPU counterpart of a CUDA graph).",
    )
    speculative_algorithm: str | None = _opt(
        None,
        "Speculative decoding: 'ngram' drafts each decoding request's next tokens from its own "
        "prompt and output (prompt lookup, no draft model) and verifies them in the decode "
        "step's forward pass; greedy outputs are unchanged, sampled ones keep their "
        "distribution. Requests with a grammar, logprobs or penalties decode as usual. "
        "Default: off.",
        choices=SPECULATIVE_ALGORITHMS,
    )
    speculative_num_draft_tokens: int | None = _opt(
        None,
        "Most tokens drafted for one request in one decode step (speculative decoding). "
        "Default: tuned per compute dtype (5 for bfloat16, 3 for float32: docs/tuning.md).",
    )
    speculative_ngram_min_match_window_size: int = _opt(
        1, "Shortest suffix of a request's tokens that n-gram drafting looks up."
    )
    speculative_ngram_max_match_window_size: int = _opt(
        8, "Longest suffix n-gram drafting looks up (the longest one found earlier wins)."
    )
    chat_template: str | None = _opt(
        None,
        "Chat template for chat requests: a Jinja file, or a built-in name (chatml, gemma). "
        "Default: the model's own; chat requests to a model without one get a 400.",
    )
    num_threads: int | None = _opt(None, "Torch intra-op threads (default: all cores).")
    random_seed: int = _opt(0, "Seed for requests that do not set their own sampling seed.")
    max_queued_requests: int | None = _opt(None, "Reject new requests beyond this many waiting.")
    max_n: int = _opt(128, "Most samples (n) one prompt may ask for.")
    max_batch_prompts: int = _opt(256, "Most prompts in one request (a batch).")
    max_request_sequences: int = _opt(
        256, "Most sequences (prompts x n) one request may make: bounds one caller's work."
    )
    max_images_per_request: int = _opt(
        8, "Most images one prompt may carry (multimodal models); more is a 400."
    )
    max_image_bytes: int = _opt(
        10 * 1024 * 1024, "Largest encoded image accepted, in bytes (after base64 decoding)."
    )
    max_image_pixels: int = _opt(
        4096 * 4096, "Most pixels (width x height) of an accepted image, checked before decoding."
    )
    vision_cache_images: int = _opt(
        16,
        "Images whose vision-encoder output is kept (by content hash, least recently used "
        "dropped), so a chunked prefill or a repeated image encodes once. One LLaVA-1.5-7B "
        "image's output is 576 x 4096 values (4.5 MiB in bfloat16).",
    )
    tune: tuple[str, ...] = _opt(
        (),
        "Override a performance threshold, as name=value (repeatable); the names and their "
        "measured defaults are the fields of radixgen.runtime.tuning.Tuning.",
    )

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_CHOICES:
            raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {self.dtype!r}")
        if self.schedule_policy not in SCHEDULE_POLICIES:
            raise ValueError(
                f"schedule_policy must be one of {SCHEDULE_POLICIES}, got {self.schedule_policy!r}"
            )
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(
                f"attention_backend must be one of {ATTENTION_BACKENDS}, "
                f"got {self.attention_backend!r}"
            )
        if self.speculative_algorithm not in (None, *SPECULATIVE_ALGORITHMS):
            raise ValueError(
                f"speculative_algorithm must be one of {SPECULATIVE_ALGORITHMS} or None, "
                f"got {self.speculative_algorithm!r}"
            )
        if not (
            1
            <= self.speculative_ngram_min_match_window_size
            <= self.speculative_ngram_max_match_window_size
        ):
            raise ValueError(
                "speculative n-gram windows need 1 <= min <= max, got "
                f"{self.speculative_ngram_min_match_window_size} and "
                f"{self.speculative_ngram_max_match_window_size}"
            )
        if self.speculative_num_draft_tokens is not None and self.speculative_num_draft_tokens < 1:
            raise ValueError(
                "speculative_num_draft_tokens must be >= 1, got "
                f"{self.speculative_num_draft_tokens}"
            )
        if self.int4_max_tokens is not None and self.int4_max_tokens < 0:
            raise ValueError(f"int4_max_tokens must be >= 0, got {self.int4_max_tokens}")
        for name in (
            "kv_cache_tokens",
            "max_running_requests",
            "max_prefill_tokens",
            "mixed_step_tokens",
            "max_n",
            "max_batch_prompts",
            "max_request_sequences",
            "max_images_per_request",
            "max_image_bytes",
            "max_image_pixels",
            "vision_cache_images",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.mixed_step_ms < 0:
            raise ValueError(f"mixed_step_ms must be >= 0, got {self.mixed_step_ms}")
        if not 0 < self.swa_full_tokens_ratio <= 1:
            raise ValueError(
                f"swa_full_tokens_ratio must be in (0, 1], got {self.swa_full_tokens_ratio}"
            )
        if self.chunked_prefill_size == 0 or self.chunked_prefill_size < -1:
            raise ValueError("chunked_prefill_size must be positive or -1")
        object.__setattr__(self, "tune", tuple(self.tune))
        Tuning.parse(self.tune)  # fail at construction, naming the bad entry

    @property
    def tuning(self) -> Tuning:
        """The performance thresholds, defaults with `tune` applied."""
        return Tuning.parse(self.tune)

    def swa_pool_tokens(self, window: int) -> int:
        """SWA slots of a hybrid pool for sliding windows of `window`: `swa_full_tokens_ratio`
        of the pool, but never fewer than one window plus the widest forward pass (a pass
        writes window KV for all its new tokens), nor more than the pool."""
        widest = max(self.max_prefill_tokens, self.mixed_step_tokens) + self.max_running_requests
        wanted = max(int(self.kv_cache_tokens * self.swa_full_tokens_ratio), window + widest)
        return min(wanted, self.kv_cache_tokens)

    def int4_tokens(self) -> int:
        """The widest pass on the 4-bit weights: `int4_max_tokens`, or the tuned default for
        the compute dtype (0: always dense)."""
        if self.int4_max_tokens is not None:
            return self.int4_max_tokens
        return self.tuning.int4_max_tokens(self.torch_dtype)

    def num_draft_tokens(self) -> int:
        """The most tokens one request drafts in a step: `speculative_num_draft_tokens`, or
        the tuned default for the compute dtype."""
        if self.speculative_num_draft_tokens is not None:
            return self.speculative_num_draft_tokens
        return self.tuning.speculative_draft_tokens(self.torch_dtype)

    @property
    def torch_dtype(self) -> torch.dtype:
        """The compute dtype, with "auto" resolved for this machine."""
        return DTYPES[auto_dtype(self.device) if self.dtype == "auto" else self.dtype]

    def replace(self, **changes: Any) -> EngineConfig:
        return dataclasses.replace(self, **changes)
