"""The systems compared, each opened as a language backend that records its requests.

* radixgen   in-process `Engine` (dtype "auto", cache-aware "lpm" scheduling), the backend a program
             gets from `set_default_backend(Engine(...))`; programs run 64 at a time.
* no-cache   the same with `disable_radix_cache=True` (the paper's "no cache" ablation).
* fcfs       the same with `schedule_policy="fcfs"` (the paper's FCFS-schedule ablation).
* llamacpp   llama-cpp-python's OpenAI server on the same GGUF file (`--n_threads 2`), driven
             by the language's `OpenAI` backend as a completion model with the ChatML template.
             The server runs one request at a time and reuses the KV prefix shared with the
             previous request only, so programs run one at a time (their forks still send
             concurrently): more programs in flight would only evict each other's prefixes.
             Its `/v1/completions` accepts one prompt per request and treats `max_tokens=0` as
             "until the context is full", so `select` cannot work; it ignores the `regex` /
             `json_schema` fields the backend sends (it reads only a GBNF `grammar`), so its
             answers would be unconstrained: select and constrained workloads are n/a.
* hf         transformers `generate` per call (no KV reuse between calls), in the dtype radixgen's
             "auto" picks, programs one at a time; only a few cheap workloads (`HF_WORKLOADS`),
             the rest n/a.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.servers import llamacpp_spec, log, running_server, served_model
from benchmarks.workloads.base import CONSTRAINED, SELECT
from benchmarks.workloads.recording import RecordingEngineBackend, RecordingOpenAI, RequestLog
from radixgen.runtime.config import DTYPES, auto_dtype
from radixgen.runtime.engine import Engine

HF_WORKLOADS = ("mmlu", "chat-short", "rag")
ENGINE_PARALLEL = 64  # programs in flight on radixgen (max_running_requests is 64)
COUNTERS = (
    "prompt_tokens",
    "cached_tokens",
    "generated_tokens",
    "prefill_tokens",  # tokens the prefill passes computed (re-prefills after retraction too)
    "prefill_seconds",
    "decode_seconds",
    "decode_steps",  # generated tokens / decode steps: how many requests decoded together
    "retractions",
    "evicted_tokens",  # radix-cache slots evicted to make room
)
"""Engine counters a run reports (deltas over the run): hit rate, the ceiling's inputs
(`metrics.ceiling`), and what memory pressure cost."""


@dataclass(frozen=True)
class SystemSpec:
    key: str
    label: str
    capabilities: frozenset[str]
    """Workload needs (`SELECT`, `CONSTRAINED`) this system can serve."""
    parallel: int
    """Programs in flight at once."""
    workloads: tuple[str, ...] | None = None
    """Only these workloads (None: all it is capable of)."""
    engine_options: dict[str, Any] = field(default_factory=dict)

    def unavailable_reason(self, name: str, needs: frozenset[str]) -> str:
        """Why this system does not run workload `name` ("" if it does)."""
        missing = needs - self.capabilities
        if missing:
            return f"n/a: no {', '.join(sorted(missing))} through this backend"
        if self.workloads is not None and name not in self.workloads:
            return "n/a: run on a few workloads only (kept small)"
        return ""


ALL = frozenset({SELECT, CONSTRAINED})
SPECS: dict[str, SystemSpec] = {
    s.key: s
    for s in (
        SystemSpec("radixgen", "radixgen", ALL, ENGINE_PARALLEL),
        SystemSpec(
            "no-cache",
            "radixgen, cache off",
            ALL,
            ENGINE_PARALLEL,
            engine_options={"disable_radix_cache": True},
        ),
        SystemSpec(
            "fcfs",
            "radixgen, FCFS",
            ALL,
            ENGINE_PARALLEL,
            engine_options={"schedule_policy": "fcfs"},
        ),
        SystemSpec("llamacpp", "llama.cpp server", frozenset(), 1),
        SystemSpec("hf", "HF transformers", frozenset(), 1, workloads=HF_WORKLOADS),
    )
}


@dataclass
class OpenSystem:
    """A ready system: its backend, its request log, and how to read its counters."""

    spec: SystemSpec
    backend: Any
    log: RequestLog
    tokenize: Callable[[str], list[int]]
    engine: Engine | None = None  # radixgen systems: hit-rate counters and cache flushes

    def counters(self) -> dict[str, float] | None:
        """The engine's cumulative counters (`COUNTERS`); the runner keeps a run's deltas."""
        if self.engine is None:
            return None
        stats = self.engine.stats()
        return {k: stats.get(k, 0) for k in COUNTERS}

    def flush_cache(self) -> None:
        if self.engine is None:
            return
        for _ in range(100):  # False while the last requests are still being released
            if self.engine.flush_cache():
                return
            time.sleep(0.05)
        raise RuntimeError("the engine's cache could not be flushed")


def engine_system(spec: SystemSpec, engine: Engine) -> OpenSystem:
    """Wrap an existing engine (the smoke test passes its session engine)."""
    log_ = RequestLog()
    tokenize = lambda text: engine.tokenizer(text)["input_ids"]
    return OpenSystem(spec, RecordingEngineBackend(engine, log_), log_, tokenize, engine)


def _radixgen_tokenizer() -> Any:
    from radixgen.runtime.model.loader import resolve_model
    from radixgen.runtime.tokenizer import load_tokenizer

    return load_tokenizer(resolve_model("smollm2"))


@contextlib.contextmanager
def _llamacpp(spec: SystemSpec, log_dir: Path) -> Iterator[OpenSystem]:
    from radixgen.runtime.model.loader import default_model_path

    server = llamacpp_spec(default_model_path())
    # logprobs are never requested from it, so skip computing logits for every prompt token
    server = dataclasses.replace(server, argv=(*server.argv, "--logits_all", "false"))
    with running_server(server, log_dir) as root:
        log_ = RequestLog()
        backend = RecordingOpenAI(
            served_model(root),
            log_,
            is_chat_model=False,
            chat_template="chatml",
            base_url=root + "/v1",
            api_key="unused",
            max_retries=0,
            timeout=900.0,
        )
        tokenizer = _radixgen_tokenizer()
        yield OpenSystem(spec, backend, log_, lambda text: tokenizer(text)["input_ids"])


@contextlib.contextmanager
def _no_tqdm() -> Iterator[None]:
    saved = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TQDM_DISABLE")
        else:
            os.environ["TQDM_DISABLE"] = saved


@contextlib.contextmanager
def _hf(spec: SystemSpec) -> Iterator[OpenSystem]:
    import transformers
    from transformers import AutoModelForCausalLM

    from benchmarks.workloads.hf_backend import HFBackend
    from radixgen.runtime.model.loader import default_model_path

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    path = default_model_path()

    def load() -> Any:
        with _no_tqdm():  # the GGUF conversion's progress bar
            return AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, dtype=DTYPES[auto_dtype("cpu")]
            ).eval()

    # Loaded on a thread that then exits: an OpenMP pool left on the main thread would slow
    # every system measured after this one (see `run_all`).
    with ThreadPoolExecutor(1) as loader:
        model = loader.submit(load).result()
    tokenizer = _radixgen_tokenizer()
    log_ = RequestLog()
    backend = HFBackend(model, tokenizer, log_, "chatml")
    yield OpenSystem(spec, backend, log_, lambda text: tokenizer(text)["input_ids"])


@contextlib.contextmanager
def open_system(key: str, log_dir: Path, spec: SystemSpec | None = None) -> Iterator[OpenSystem]:
    """Start system `key` (load its model or launch its server); always stop it on exit.
    `spec` overrides `SPECS[key]` (pressure mode's engines with a small pool and a policy)."""
    spec = spec or SPECS[key]
    started = time.perf_counter()
    if key == "llamacpp":
        cm: Any = _llamacpp(spec, log_dir)
    elif key == "hf":
        cm = _hf(spec)
    else:
        cm = contextlib.nullcontext()
    with cm as opened:
        engine = None
        if opened is None:
            engine = Engine(model="smollm2", **spec.engine_options)
            opened = engine_system(spec, engine)
        try:
            log(f"{spec.label}: ready after {time.perf_counter() - started:.0f}s")
            yield opened
        finally:
            if engine is not None:
                engine.shutdown()
