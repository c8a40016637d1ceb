"""The router benchmark's workload builder and report, without servers: keeps
benchmarks/bench_router.py importable and its workload what the record describes."""

from __future__ import annotations

from collections import Counter

from benchmarks.bench_router import Result, build_workload, parse_args, report


def test_workload_is_prefixes_times_questions_shuffled_and_deterministic():
    requests = build_workload(8, 16, seed=1234)
    assert len(requests) == 128 and len({r.text for r in requests}) == 128
    assert Counter(r.prefix for r in requests) == {p: 16 for p in range(8)}
    assert [r.text for r in requests] == [r.text for r in build_workload(8, 16, seed=1234)]
    assert [r.prefix for r in requests[:16]] != [requests[0].prefix] * 16  # shuffled
    heads = {r.prefix: r.text.split("\nQ: What is")[0] for r in requests}
    assert len(set(heads.values())) == 8  # distinct prefixes, each shared by its questions
    assert all(r.text.startswith(heads[r.prefix]) for r in requests)


def test_report_has_the_table_and_both_target_ratios():
    args = parse_args([])
    results = {
        "cache_aware": Result("A", 10, 0, 1.0, (0.1, 0.2), 100, 90),
        "round_robin": Result("B", 10, 0, 2.0, (0.1, 0.3), 100, 80),
        "single": Result("C", 10, 0, 1.0, (0.1, 0.2), 100, 90),
    }
    text = report(results, args)
    assert "| A | 10.00 | 90.0% |" in text
    assert "single-worker hit rate: 100.0% (target >= 95%)" in text
    assert "round_robin req/s: 2.00x (target >= 1.3x)" in text
