"""The serving benchmark's plumbing (benchmarks/bench_serving.py), without servers: concurrency
levels, the summary of streamed requests, server memory, and the report's ratios and targets."""

from __future__ import annotations

import os

import pytest

from benchmarks import bench_serving as bs
from benchmarks import record
from benchmarks import serving_results as results
from benchmarks.servers import ServerSpec

PEER_NOTE = "peer: llama.cpp's C++ llama-server (version: 1) from /x, 8 slots x 4096 tokens"


def test_concurrency_levels_and_their_conversations():
    sizes = bs.sizes_from(bs.parse_args([]))
    assert sizes.users == (8, 64)
    assert (sizes.conversations_for(8), sizes.conversations_for(64)) == (32, 128)
    sizes = bs.sizes_from(bs.parse_args(["--users", "4,16", "--conversations", "5"]))
    assert sizes.users == (4, 16) and sizes.conversations_for(16) == 5
    assert bs.sizes_from(bs.parse_args(["--quick"])).users == (2, 4)
    with pytest.raises(SystemExit):
        bs.parse_args(["--users", "8,x"])
    with pytest.raises(SystemExit):
        bs.parse_args(["--users", "0"])


def test_summary_pools_gaps_counts_errors_and_reads_usage():
    ok = results.RequestResult(
        ttft_s=0.1,
        itl_s=[0.01, 0.03],
        e2e_s=1.0,
        content_chunks=3,
        finish_reason="length",
        usage={
            "completion_tokens": 3,
            "prompt_tokens": 100,
            "prompt_tokens_details": {"cached_tokens": 40},
        },
    )
    bad = results.RequestResult(ok=False, error="HTTP 400: too long")
    spec = ServerSpec("llamacpp", "llama.cpp", (), "/health")
    r = results.summarize(spec, [ok, ok, bad], wall_s=2.0, users=8)
    assert (r.requests, r.errors, r.users) == (2, 1, 8)
    assert r.first_error == "HTTP 400: too long"
    assert r.req_per_s == 1.0 and r.output_tokens == 6 and r.tokens_from == "usage"
    assert r.itl_ms[0] == pytest.approx(20.0) and r.hit_rate == pytest.approx(0.4)


def test_rss_sampler_reads_a_live_process():
    with bs.RssSampler(os.getpid(), every_s=0.01) as rss:
        block = bytearray(64 * 2**20)  # touch 64 MB while sampling
        block[::4096] = b"x" * len(block[::4096])
    assert rss.peak is not None and rss.peak >= 64 * 2**20
    assert bs.RssSampler(2**22 + 12345).peak is None  # no such process: nothing read


def _result(key: str, users: int, req_s: float, ttft99: float, itl99: float, rss, errors=0):
    r = results.SystemResult(key, key, users, requests=10, errors=errors, req_per_s=req_s)
    r.output_tok_s, r.ttft_ms, r.itl_ms, r.rss_mb = 10 * req_s, (1, ttft99), (1, itl99), rss
    return r


def test_report_names_the_cpu_the_peer_and_checks_the_targets():
    levels = {
        8: [
            _result("radixgen", 8, 8.0, 900.0, 50.0, (1000, 1100, 1050)),
            _result("llamacpp", 8, 2.0, 1000.0, 80.0, (800, 900, 820)),
        ],
        64: [
            _result("radixgen", 64, 9.0, 5000.0, 250.0, (1000, 1500, 1300)),
            _result("llamacpp", 64, 2.0, 9000.0, 900.0, (800, 900, 820)),
        ],
    }
    text = results.report(levels, {"mode": "full"}, {8: "w8", 64: "w64"}, PEER_NOTE)
    assert f"CPU: {record.machine().describe()}" in text
    assert PEER_NOTE in text
    assert "### 8 concurrent streams" in text and "### 64 concurrent streams" in text
    assert "Ratios at 8 streams: radixgen/llama.cpp: req/s 4.00x" in text
    assert "| 1000 / 1100 / 1050 |" in text
    target8 = next(ln for ln in text.splitlines() if ln.startswith("- 8 concurrent"))
    assert "4.00x" in target8 and target8.endswith("holds")
    target64 = next(ln for ln in text.splitlines() if ln.startswith("- 64 concurrent"))
    assert "p99 ITL 250 ms" in target64 and "+30.0%" in target64 and target64.endswith("MISSED")


def test_memory_is_flat_within_ten_percent():
    assert _result("r", 1, 1, 1, 1, (1000, 2000, 1100)).memory_flat is True
    assert _result("r", 1, 1, 1, 1, (1000, 2000, 1101)).memory_flat is False
    assert _result("r", 1, 1, 1, 1, (None, None, None)).memory_flat is None


def test_a_second_pass_judges_the_memory_when_one_ran():
    """The first pass's working memory (+30% here) is not a leak; growth over the same
    workload run again is."""
    warm = _result("radixgen", 64, 1, 1, 1, (1000, 1400, 1300))
    warm.rss_again_mb = (1300, 1320)
    assert warm.rss_growth == pytest.approx(0.3) and warm.rss_again_growth == pytest.approx(
        20 / 1300
    )
    assert warm.memory_flat is True
    warm.rss_again_mb = (1300, 1500)
    assert warm.memory_flat is False
    (line,) = results.targets({64: [warm]})
    assert "RSS +30.0% over the run, +15.4% over a second pass: MISSED" in line


def test_a_slower_ttft_misses_the_eight_stream_target():
    levels = {
        8: [
            _result("radixgen", 8, 8.0, 1200.0, 50.0, (1, 1, 1)),
            _result("llamacpp", 8, 2.0, 1000.0, 80.0, (1, 1, 1)),
        ]
    }
    (line,) = results.targets(levels)
    assert "4.00x" in line and line.endswith("MISSED")
