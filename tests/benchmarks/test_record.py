"""Benchmark records (benchmarks/record.py): every benchmark run writes one Markdown file with the
machine's facts, the commit, the command and the printed report; `--no-record` writes nothing.
No model is loaded: the scripts' measuring parts are replaced by canned results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench_router, record
from benchmarks.workloads import __main__ as workloads_main
from benchmarks.workloads.metrics import RunResult

ROOT = Path(__file__).resolve().parents[2]


def test_record_names_count_up_within_a_day(tmp_path):
    first = record.record_path("runtime", tmp_path, date="2026-12-07")
    assert first.name == "runtime-2026-12-07.md"
    first.write_text("x")
    second = record.record_path("runtime", tmp_path, date="2026-12-07")
    assert second.name == "runtime-2026-12-07-2.md"
    second.write_text("x")
    assert record.record_path("runtime", tmp_path, date="2026-12-07").name.endswith("-3.md")
    assert record.record_path("serving", tmp_path, date="2026-12-07").name == (
        "serving-2026-12-07.md"
    )


def test_machine_facts_come_from_the_cpu_and_the_installed_torch():
    import torch

    host = record.machine()
    cpuinfo = Path("/proc/cpuinfo").read_text()
    names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model")]
    assert host.cpu in [n for n in names if n]
    flags = next(ln for ln in cpuinfo.splitlines() if ln.startswith("flags")).split()
    assert set(host.flags) == {f for f in record.KEY_FLAGS if f in flags}
    assert torch.__version__.startswith(host.torch.split("+")[0])
    assert host.torch != "not installed"
    cores = {ln for ln in cpuinfo.splitlines() if ln.startswith(("physical id", "core id"))}
    if cores:  # Linux reports them; a VM may hide them
        assert host.cores is not None and 1 <= host.cores <= (host.logical_cpus or 1)


def test_render_has_every_fact_and_the_report_verbatim():
    host = record.Machine("Some CPU", ("avx2", "avx512f"), 2, 4, "2.13.0", "3.11.7")
    report = "| system | x |\n|---|---|\n| a | 1.0 |\n\nRatios: a/b 2.00x."
    text = record.render(
        "Runtime benchmark", report, "python b.py --quick", {"dtype": "float32"}, host, "2026-01-02"
    )
    lines = text.splitlines()
    assert lines[0] == "# Runtime benchmark (2026-01-02)"
    machine = next(ln for ln in lines if ln.startswith("- Machine: "))
    assert "Some CPU, 2 cores, 4 logical CPUs; flags: avx2 avx512f (no fma avx512_bf16" in machine
    assert "- Software: torch 2.13.0, Python 3.11.7" in lines
    sha = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    assert any(ln.startswith(f"- Commit: {sha}") for ln in lines)
    assert "- Command: `python b.py --quick`" in lines
    assert "- dtype: float32" in lines
    assert report in text


def test_command_line_quotes_arguments():
    cmd = record.command_line("python -m benchmarks.workloads", ["--workloads", "mmlu,tot", "a b"])
    assert cmd == "python -m benchmarks.workloads --workloads mmlu,tot 'a b'"


def _router_result(name: str, seconds: float) -> bench_router.Result:
    return bench_router.Result(name, 10, 0, seconds, (0.1, 0.2), 100, 90)


def test_router_run_writes_its_record_and_no_record_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_router, "run_routed", lambda p, *_: _router_result(p, 1.0))
    monkeypatch.setattr(bench_router, "run_single", lambda *_: _router_result("single", 1.0))
    assert bench_router.main(["--prefixes", "2", "--record-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    (path,) = tmp_path.iterdir()
    assert path.name.startswith("router-") and path.suffix == ".md"
    text = path.read_text()
    assert printed.strip() in text
    assert "| cache_aware | 10.00 | 90.0% |" in text
    assert "- Command: `python -m benchmarks.bench_router --prefixes 2 --record-dir " in text
    assert "- Machine: " in text and "- Commit: " in text

    assert bench_router.main(["--no-record", "--record-dir", str(tmp_path)]) == 0
    assert len(list(tmp_path.iterdir())) == 1


def test_workload_suite_run_writes_its_record(tmp_path, monkeypatch, capsys):
    canned = [RunResult("mmlu", "radixgen", programs=4, programs_per_s=2.0)]
    monkeypatch.setattr(workloads_main, "run_rounds", lambda *_a, **_k: canned)
    records = tmp_path / "records"
    argv = ["--workloads", "mmlu", "--systems", "radixgen", "--size", "small"]
    argv += ["--out", str(tmp_path / "small.json"), "--record-dir", str(records)]
    assert workloads_main.main(argv) == 0
    (path,) = records.iterdir()
    assert path.name.startswith("workloads-")
    text = path.read_text()
    assert capsys.readouterr().out.strip() in text
    assert "| MMLU (5-shot) | 2.00 |" in text
    assert "- Command: `python -m benchmarks.workloads --workloads mmlu" in text


@pytest.mark.parametrize("script", ["bench_runtime.py", "bench_serving.py", "bench_constrained.py"])
def test_file_scripts_offer_no_record(script):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "--no-record" in out.stdout and "--record-dir" in out.stdout
