"""The systems compared, each opened as a language backend that records its requests.

* radixgen   in-process `Engine` (dtype "auto", cache-aware "lpm" scheduling), the backend a program
             gets from `set_default_backend(Engine(...))`; programs run 64 at a time.
* no-cache   the same with `disable_radix_cache=True` (the paper's "no cache" ablation).
* fcfs       the same with `schedule_policy="fcfs"` (the paper's FCFS-schedule ablation).
* llamacpp   llama.cpp's own C++ `llama-server` on the same GGUF file, 2 threads
             (benchmarks/peers.py), driven by the language's `OpenAI` backend as a completion
             model with the ChatML template. Each workload runs twice, as `llamacpp-1` (1 slot,
             programs one at a time: a slot keeps the KV prefix of its last request, so more
             programs in flight would only evict each other's prefixes) and `llamacpp-8` (8
             slots, 8 programs in flight; forks of a program still send concurrently), and the
             `llamacpp` row is the better of the two by programs/s (`best_of_slots`; its note
             says which, and the other's figure). Where the C++ build is absent
             llama-cpp-python's server (one request at a time) runs `llamacpp-1` instead,
             `llamacpp-8` fails, and the row says FALLBACK.
             Its `/v1/completions` refuses `echo` ("Only no echo is supported"), so `select`
             cannot score choices; it does not read the `regex` field the backend sends, so
             constrained answers would be unconstrained: select and constrained workloads are n/a.
* hf         transformers `generate` per call (no KV reuse between calls), in the dtype radixgen's
             "auto" picks, programs one at a time; only a few cheap workloads (`HF_WORKLOADS`),
             the rest n/a.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import peers
from benchmarks.servers import log, running_server, served_model
from benchmarks.workloads.base import CONSTRAINED, SELECT
from benchmarks.workloads.metrics import RunResult
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
    "mixed_prefill_tokens",  # mixed steps (prefill chunk + decode rows in one pass) count apart
    "mixed_decode_tokens",
    "mixed_seconds",
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
    slots: int = 0
    """llama-server's parallel slots (the peer's variants; 0: not one)."""
    variants: tuple[str, ...] = ()
    """Systems that actually run in its place; its row is the best of theirs."""

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
        SystemSpec(
            "llamacpp",
            "llama.cpp (llama-server, best of 1/8 slots)",
            frozenset(),
            1,
            variants=("llamacpp-1", "llamacpp-8"),
        ),
        SystemSpec("llamacpp-1", "llama-server, 1 slot", frozenset(), 1, slots=1),
        SystemSpec("llamacpp-8", "llama-server, 8 slots", frozenset(), 8, slots=8),
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

    peer = peers.server_peer(default_model_path(), spec.slots, key=spec.key)
    if isinstance(peer, str):
        raise RuntimeError(peer)
    if peer.slots < spec.slots:
        raise RuntimeError(f"n/a: {peer.note}")
    server = peer.spec
    if not peer.native:  # logprobs are never requested: skip computing every prompt's logits
        server = dataclasses.replace(server, argv=(*server.argv, "--logits_all", "false"))
    log(peer.note)
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
    if spec.variants:
        raise ValueError(f"{key} runs as {', '.join(spec.variants)} (see expand_systems)")
    if spec.slots:
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


# --- the peer's slot variants -----------------------------------------------------------------


def expand_systems(keys: list[str]) -> list[str]:
    """The systems to start for `keys`: a system with variants becomes its variants; each key
    once, in order."""
    out: list[str] = []
    for key in keys:
        for k in SPECS[key].variants or (key,):
            if k not in out:
                out.append(k)
    return out


def best_of_slots(results: list[RunResult]) -> list[RunResult]:
    """Each workload's variant results (e.g. llama-server with 1 and with 8 slots) replaced by
    one row of the system they stand for: the variant with the most programs/s (its rounds
    come along, so paired ratios pair its rounds), its `note` naming the slots and the others'
    figures. A variant that failed is only chosen when none worked. Other rows pass through."""
    parent = {v: s.key for s in SPECS.values() for v in s.variants}
    merged: dict[tuple[str, str], list[RunResult]] = {}
    out: list[RunResult | tuple[str, str]] = []
    for r in results:
        if r.system not in parent:
            out.append(r)
            continue
        group = (r.workload, parent[r.system])
        if group not in merged:
            merged[group] = []
            out.append(group)  # the merged row takes the first variant's place
        merged[group].append(r)
    return [x if isinstance(x, RunResult) else _best(x[1], merged[x]) for x in out]


def _best(key: str, variants: list[RunResult]) -> RunResult:
    ok = [r for r in variants if r.ok]
    if not ok:  # n/a or failed everywhere: the first variant's reason
        return dataclasses.replace(variants[0], system=key)
    best = max(ok, key=lambda r: r.programs_per_s or 0.0)
    others = [
        f"{_slots(r.system)}: "
        + (f"{r.programs_per_s:.2f} prog/s" if r.ok and r.programs_per_s else r.status[:80])
        for r in variants
        if r is not best
    ]
    note = _slots(best.system) + (f" (vs {'; '.join(others)})" if others else "")
    if not peers.binary("llama-server"):
        note += "; FALLBACK llama-cpp-python server: the C++ llama-server is absent"
    return dataclasses.replace(best, system=key, note=note)


def peer_description() -> str:
    """What the llama.cpp rows run on, for the report's header."""
    if peers.binary("llama-server"):
        return f"llama.cpp's C++ llama-server ({peers.version() or 'version unknown'})"
    try:
        fallback = f"llama-cpp-python {importlib.metadata.version('llama-cpp-python')}"
    except importlib.metadata.PackageNotFoundError:
        fallback = "llama-cpp-python (not installed)"
    return f"FALLBACK {fallback} server: the C++ llama-server is absent"


def _slots(key: str) -> str:
    n = SPECS[key].slots
    return f"{n} slot" + ("s" if n != 1 else "")
