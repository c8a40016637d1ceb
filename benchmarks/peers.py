"""llama.cpp as the benchmarks' peer: its own C++ `llama-server` and `llama-bench`.

Binaries: the directory `$RADIXGEN_LLAMA_CPP_BIN`, else `<repo>/.peers/llama.cpp/build/bin`
(where `scripts/build_llama_cpp.sh` builds them for the host CPU). They run with that directory
on `LD_LIBRARY_PATH` (the shared ggml and llama libraries are built next to them), 2 threads.

Server: `llama-server -m GGUF -t 2 -np SLOTS -c SLOTS*CTX_PER_SLOT --host 127.0.0.1 --port P`.
With an explicit `-np` the KV cache is split (not unified): every slot owns `CTX_PER_SLOT`
tokens, which bounds the longest request it takes (prompt + output; longer ones are refused with
an HTTP error, which the benchmarks count). Ready once `GET /health` answers 200 (503 while the
model loads). Its OpenAI chat endpoint streams one chunk per token and, when asked with
`stream_options.include_usage`, ends with a chunk carrying `usage` (with
`prompt_tokens_details.cached_tokens`: it reuses a slot's KV prefix) and llama.cpp's `timings`.

Fallback: where the C++ build is absent, llama-cpp-python's server (`python -m llama_cpp.server`)
on the same GGUF. It serves one request at a time, so it understates llama.cpp; a `Peer` built
on it says so in its `note`, and the benchmarks print that note with their results.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.servers import ROOT, ServerSpec, python_bin

ENV_BIN = "RADIXGEN_LLAMA_CPP_BIN"
DEFAULT_BIN = ROOT / ".peers" / "llama.cpp" / "build" / "bin"
THREADS = 2
CTX_PER_SLOT = 4096  # tokens of KV per slot: the longest request a slot serves
BUILD_HINT = f"bash scripts/build_llama_cpp.sh, or set {ENV_BIN} to a directory holding them"


def bin_dir() -> Path:
    """Where the C++ binaries are looked for: `$RADIXGEN_LLAMA_CPP_BIN`, else the repo's build."""
    given = os.environ.get(ENV_BIN)
    return Path(given).expanduser() if given else DEFAULT_BIN


def binary(name: str, directory: Path | None = None) -> Path | None:
    """`directory/name` (default `bin_dir()`) when it is an executable file, else None."""
    path = (directory or bin_dir()) / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def run_env(directory: Path) -> dict[str, str]:
    """What a binary of `directory` needs in its environment: its libraries' directory."""
    current = os.environ.get("LD_LIBRARY_PATH", "")
    return {"LD_LIBRARY_PATH": str(directory) + (os.pathsep + current if current else "")}


def version(directory: Path | None = None) -> str:
    """`llama-server --version`'s first line ("" when it cannot be asked)."""
    directory = directory or bin_dir()
    exe = binary("llama-server", directory)
    if exe is None:
        return ""
    try:
        proc = subprocess.run(
            [str(exe), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **run_env(directory)},
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else ""


# --- servers ----------------------------------------------------------------------------------


def llama_server_spec(
    model_path: Path,
    slots: int,
    *,
    key: str = "llamacpp",
    ctx_per_slot: int = CTX_PER_SLOT,
    directory: Path | None = None,
) -> ServerSpec:
    """llama.cpp's C++ server with `slots` parallel slots of `ctx_per_slot` tokens each."""
    directory = directory or bin_dir()
    argv = [str(directory / "llama-server"), "-m", str(model_path), "-t", str(THREADS)]
    argv += ["-np", str(slots), "-c", str(slots * ctx_per_slot), "--host", "127.0.0.1"]
    plural = "s" if slots != 1 else ""
    label = f"llama.cpp (llama-server, {slots} slot{plural})"
    env = tuple(run_env(directory).items())
    return ServerSpec(key, label, tuple(argv), "/health", env=env)


def llama_cpp_python_spec(model_path: Path, key: str = "llamacpp") -> ServerSpec:
    """The fallback: llama-cpp-python's OpenAI server, one request at a time.

    `--interrupt_requests false`: its default cuts a running stream short whenever another
    request waits, which concurrent clients always cause."""
    argv = [python_bin(), "-m", "llama_cpp.server", "--model", str(model_path)]
    argv += ["--host", "127.0.0.1", "--n_threads", str(THREADS), "--n_ctx", str(CTX_PER_SLOT)]
    argv += ["--interrupt_requests", "false"]
    label = "llama.cpp (llama-cpp-python server, FALLBACK)"
    return ServerSpec(key, label, tuple(argv), "/v1/models")


LLAMA_CPP_PYTHON_INSTALL = (
    'pip install llama-cpp-python "sse-starlette>=1.6.1" "starlette-context>=0.3.6,<0.4" '
    '"pydantic-settings>=2.0.1" "PyYAML>=5.1"'
)


def llama_cpp_python_unavailable() -> str:
    """Why llama-cpp-python's server cannot run here ("" when it can)."""
    check = "import llama_cpp.server.app"
    try:
        proc = subprocess.run(
            [python_bin(), "-c", check], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot check llama_cpp.server: {exc}"
    if proc.returncode == 0:
        return ""
    last = (proc.stderr.strip().splitlines() or ["import failed"])[-1]
    return f"`{check}` fails ({last}); install: {LLAMA_CPP_PYTHON_INSTALL}"


@dataclass(frozen=True)
class Peer:
    """The llama.cpp server a benchmark compares with."""

    spec: ServerSpec
    native: bool
    """True: llama.cpp's C++ llama-server; False: llama-cpp-python's fallback."""
    slots: int
    """Requests it serves at once (the fallback: 1)."""
    note: str
    """One line for the report: what ran (and, for the fallback, why and what it means)."""


def server_peer(model_path: Path, slots: int, key: str = "llamacpp") -> Peer | str:
    """llama-server with `slots` slots when the C++ build is there, else llama-cpp-python's
    server (1 slot, marked FALLBACK); a string saying why when neither can run."""
    directory = bin_dir()
    if binary("llama-server", directory) is not None:
        spec = llama_server_spec(model_path, slots, key=key, directory=directory)
        build = version(directory) or "version unknown"
        note = (
            f"peer: llama.cpp's C++ llama-server ({build}) from {directory}, {slots} "
            f"slot{'s' if slots != 1 else ''} x {CTX_PER_SLOT} tokens, {THREADS} threads"
        )
        return Peer(spec, True, slots, note)
    missing = f"llama.cpp's C++ llama-server is not in {directory} ({BUILD_HINT})"
    reason = llama_cpp_python_unavailable()
    if reason:
        return f"{missing}; the fallback cannot run either: {reason}"
    note = (
        f"peer: FALLBACK llama-cpp-python's server, because {missing}. It serves one request "
        "at a time, so it understates llama.cpp: these are not the llama-server figures."
    )
    return Peer(llama_cpp_python_spec(model_path, key), False, 1, note)


# --- llama-bench ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchRun:
    """One `llama-bench` test: tokens per second of each repetition."""

    n_prompt: int
    n_gen: int
    samples_tok_s: tuple[float, ...]
    build: str

    @property
    def median_tok_s(self) -> float:
        return statistics.median(self.samples_tok_s)


def llama_bench_argv(
    model_path: Path,
    new_tokens: int,
    repetitions: int,
    directory: Path | None = None,
    prompt_tokens: int = 0,
) -> list[str]:
    """`llama-bench` decoding `new_tokens` from an empty prompt (its "tg" test) and, with
    `prompt_tokens`, also prefilling that many (its "pp" test), as JSON."""
    exe = (directory or bin_dir()) / "llama-bench"
    argv = [str(exe), "-m", str(model_path), "-t", str(THREADS), "-p", str(prompt_tokens)]
    return [*argv, "-n", str(new_tokens), "-r", str(repetitions), "-o", "json"]


def parse_llama_bench(text: str) -> list[BenchRun]:
    """`llama-bench -o json` output -> its tests."""
    runs = []
    for test in json.loads(text):
        build = f"build {test.get('build_number', '?')} ({test.get('build_commit', '?')})"
        samples = tuple(float(x) for x in test.get("samples_ts") or [test["avg_ts"]])
        runs.append(BenchRun(int(test["n_prompt"]), int(test["n_gen"]), samples, build))
    return runs


def run_llama_bench(model_path: Path, new_tokens: int, repetitions: int) -> BenchRun:
    """Run `llama-bench` (which must exist: see `binary`) and return its decode test."""
    runs = llama_bench_tests(model_path, new_tokens, repetitions)
    (run,) = [r for r in runs if r.n_gen == new_tokens]
    return run


def llama_bench_tests(
    model_path: Path, new_tokens: int, repetitions: int, prompt_tokens: int = 0
) -> list[BenchRun]:
    """Run `llama-bench` (which must exist: see `binary`); its tests (decode, and prefill when
    `prompt_tokens` > 0)."""
    directory = bin_dir()
    proc = subprocess.run(
        llama_bench_argv(model_path, new_tokens, repetitions, directory, prompt_tokens),
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, **run_env(directory)},
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"llama-bench exited with status {proc.returncode}: {tail}")
    return parse_llama_bench(proc.stdout)
