"""The benchmarks' peer (benchmarks/peers.py): where llama.cpp's C++ binaries are found, the
llama-server command, the loud llama-cpp-python fallback, llama-bench's JSON, and the workload
suite's best-of-slots rows. Tests that need the real C++ build skip when it is absent."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from benchmarks import bench_decode, bench_serving, peers
from benchmarks.servers import rss_bytes, running_process
from benchmarks.sharegpt import ChatRequest
from benchmarks.workloads.metrics import RunResult
from benchmarks.workloads.systems import SPECS, best_of_slots, expand_systems
from radixgen.runtime.model.loader import default_model_path

needs_llama_server = pytest.mark.skipif(
    peers.binary("llama-server") is None, reason=f"no llama-server in {peers.bin_dir()}"
)
needs_llama_bench = pytest.mark.skipif(
    peers.binary("llama-bench") is None, reason=f"no llama-bench in {peers.bin_dir()}"
)


def _executable(path: Path, text: str = "#!/bin/sh\necho 'version: 9 (test)' >&2\n") -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# --- finding the binaries ---------------------------------------------------------------------


def test_binaries_are_found_through_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(peers.ENV_BIN, str(tmp_path))
    server = _executable(tmp_path / "llama-server")
    (tmp_path / "llama-bench").write_text("not executable")
    assert peers.bin_dir() == tmp_path
    assert peers.binary("llama-server") == server
    assert peers.binary("llama-bench") is None  # present but not executable
    assert peers.version() == "version: 9 (test)"


def test_without_the_variable_the_repo_build_is_used(monkeypatch):
    monkeypatch.delenv(peers.ENV_BIN, raising=False)
    assert peers.bin_dir() == peers.ROOT / ".peers" / "llama.cpp" / "build" / "bin"


def test_llama_server_command_gives_every_slot_its_context(tmp_path):
    spec = peers.llama_server_spec(Path("/m.gguf"), 8, directory=tmp_path)
    argv = list(spec.argv)
    assert argv[0] == str(tmp_path / "llama-server")
    pairs = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert pairs["-m"] == "/m.gguf" and pairs["-t"] == "2" and pairs["-np"] == "8"
    assert pairs["-c"] == str(8 * peers.CTX_PER_SLOT)
    assert pairs["--host"] == "127.0.0.1" and "--port" not in argv  # the launcher adds it
    assert spec.ready_path == "/health"
    assert dict(spec.env)["LD_LIBRARY_PATH"].split(os.pathsep)[0] == str(tmp_path)


def test_server_peer_prefers_the_cxx_build(tmp_path, monkeypatch):
    monkeypatch.setenv(peers.ENV_BIN, str(tmp_path))
    _executable(tmp_path / "llama-server")
    peer = peers.server_peer(Path("/m.gguf"), 8)
    assert isinstance(peer, peers.Peer)
    assert peer.native and peer.slots == 8
    assert "C++ llama-server" in peer.note and "version: 9 (test)" in peer.note
    assert "FALLBACK" not in peer.note and "FALLBACK" not in peer.spec.label


def test_without_the_cxx_build_the_fallback_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(peers.ENV_BIN, str(tmp_path))  # empty: no binaries
    monkeypatch.setattr(peers, "llama_cpp_python_unavailable", lambda: "")
    peer = peers.server_peer(Path("/m.gguf"), 8)
    assert isinstance(peer, peers.Peer)
    assert not peer.native and peer.slots == 1
    assert "FALLBACK" in peer.note and "one request at a time" in peer.note
    assert str(tmp_path) in peer.note
    assert "llama_cpp.server" in peer.spec.argv and "FALLBACK" in peer.spec.label

    monkeypatch.setattr(peers, "llama_cpp_python_unavailable", lambda: "not installed")
    reason = peers.server_peer(Path("/m.gguf"), 8)
    assert isinstance(reason, str) and "not installed" in reason


def test_llama_bench_json_gives_the_median_repetition():
    text = json.dumps(
        [
            {
                "build_commit": "abc",
                "build_number": 7,
                "n_prompt": 0,
                "n_gen": 128,
                "avg_ts": 150.0,
                "samples_ts": [150.0, 140.0, 170.0],
            }
        ]
    )
    (run,) = peers.parse_llama_bench(text)
    assert (run.n_prompt, run.n_gen) == (0, 128)
    assert run.median_tok_s == 150.0 and run.build == "build 7 (abc)"
    argv = peers.llama_bench_argv(Path("/m.gguf"), 128, 5, Path("/bin"))
    expected = "/bin/llama-bench -m /m.gguf -t 2 -p 0 -n 128 -r 5 -o json"
    assert argv == expected.split()


# --- the real peer ----------------------------------------------------------------------------


@needs_llama_server
def test_llama_server_streams_chat_with_usage_and_answers_completions(tmp_path):
    """The contract the benchmarks rely on: /health, a streamed chat with usage (cached tokens
    included), /completion with token ids and timings, a readable RSS."""
    import asyncio

    spec = peers.llama_server_spec(default_model_path(), 2, ctx_per_slot=1024)
    with running_process(spec, tmp_path) as server:
        assert httpx.get(server.url + "/health", timeout=30).status_code == 200
        model = bench_serving.served_model(server.url)
        req = ChatRequest(({"role": "user", "content": "Name a colour."},), 4)

        async def chat() -> bench_serving.RequestResult:
            async with httpx.AsyncClient(base_url=server.url + "/v1", timeout=120) as client:
                return await bench_serving.stream_chat(client, model, req)

        res = asyncio.run(chat())
        assert res.ok, res.error
        assert res.usage["completion_tokens"] == res.output_tokens >= 1
        assert res.usage["prompt_tokens_details"]["cached_tokens"] is not None
        assert res.content_chunks >= 1 and res.ttft_s is not None
        done = bench_decode.peer_completion(server.url, [1, 2, 3, 4], 4)
        assert done.tokens == 4 and done.tok_s and done.tok_s > 0
        assert len(done.output_ids) == 4
        assert rss_bytes(server.pid) > 10 * 2**20
    assert not server.alive


@needs_llama_bench
def test_llama_bench_decodes_from_an_empty_prompt():
    run = peers.run_llama_bench(default_model_path(), 4, 1)
    assert run.n_prompt == 0 and run.n_gen == 4
    assert len(run.samples_tok_s) == 1 and run.median_tok_s > 0


# --- the workload suite: llama-server with 1 and 8 slots --------------------------------------


def test_llamacpp_runs_as_its_slot_variants():
    assert expand_systems(["radixgen", "llamacpp"]) == ["radixgen", "llamacpp-1", "llamacpp-8"]
    assert expand_systems(list(SPECS)).count("llamacpp-8") == 1
    assert "llamacpp" not in expand_systems(list(SPECS))
    assert (SPECS["llamacpp-1"].parallel, SPECS["llamacpp-8"].parallel) == (1, 8)
    assert (SPECS["llamacpp-1"].slots, SPECS["llamacpp-8"].slots) == (1, 8)


def test_each_workload_reports_the_better_slot_count():
    results = [
        RunResult("tot", "radixgen", programs_per_s=5.0),
        RunResult("tot", "llamacpp-1", programs_per_s=2.0, round_programs_per_s=[2.0, 1.9]),
        RunResult("tot", "llamacpp-8", programs_per_s=3.0, round_programs_per_s=[3.0, 2.8]),
        RunResult("judge", "llamacpp-1", programs_per_s=1.5),
        RunResult("judge", "llamacpp-8", status="failed: RuntimeError('boom')"),
        RunResult("mmlu", "llamacpp-1", status="n/a: no select through this backend"),
        RunResult("mmlu", "llamacpp-8", status="n/a: no select through this backend"),
    ]
    merged = best_of_slots(results)
    assert [(r.workload, r.system) for r in merged] == [
        ("tot", "radixgen"),
        ("tot", "llamacpp"),
        ("judge", "llamacpp"),
        ("mmlu", "llamacpp"),
    ]
    tot, judge, mmlu = merged[1:]
    assert tot.programs_per_s == 3.0 and tot.round_programs_per_s == [3.0, 2.8]
    assert tot.note.startswith("8 slots") and "1 slot: 2.00 prog/s" in tot.note
    assert judge.programs_per_s == 1.5
    assert judge.note.startswith("1 slot") and "failed" in judge.note
    assert mmlu.status.startswith("n/a") and not mmlu.ok
