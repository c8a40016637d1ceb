"""The decode benchmark's plumbing (benchmarks/bench_decode.py): timing only the decode of a
streamed request, reading llama-server's timings, the extraction prompts, the identical-output
check and the record. The measuring parts are replaced by canned results where a model or the
C++ peer would be needed, except the streamed decode, which runs on the session engine."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from benchmarks import bench_decode as bd
from radixgen.runtime.config import EngineConfig

ROOT = Path(__file__).resolve().parents[2]


def test_stream_decode_times_the_tokens_after_the_first(engine):
    ids = engine.tokenizer("The old lighthouse keeper wrote")["input_ids"]
    params = {"max_new_tokens": 5, "temperature": 0, "ignore_eos": True}
    d = bd.stream_decode(engine, ids, params)
    assert d.tokens == 5 and len(d.output_ids) == 5
    assert d.decode_tokens == 4  # the first token (after the prefill) is left out
    assert d.decode_s > 0 and d.tok_s == d.decode_tokens / d.decode_s
    assert d.output_ids == engine.generate(input_ids=ids, sampling_params=params)["output_ids"]


def test_median_run_is_the_middle_rate():
    runs = [bd.Decode([], 10, 9, s) for s in (1.0, 3.0, 2.0, 4.0)]
    assert bd.median_run(runs).decode_s == 3.0  # rates 9, 3, 4.5, 2.25: lower middle 3


def test_llama_server_timings_give_its_decode_rate():
    body = {
        "content": "x",
        "tokens": [5, 6, 7],
        "tokens_predicted": 3,
        "timings": {"predicted_n": 3, "predicted_per_second": 150.5, "prompt_n": 40},
    }
    p = bd.parse_completion(body)
    assert (p.tokens, p.tok_s, p.output_ids) == (3, 150.5, [5, 6, 7])


def test_speculation_is_detected_from_the_config():
    fields = {f.name for f in dataclasses.fields(EngineConfig)}
    assert bd.speculation_available() == ("speculative_algorithm" in fields)


def test_extraction_prompts_are_chat_rendered_token_ids():
    inputs = bd.rag_inputs(bd.QUICK)
    assert list(inputs) == list(bd.RAG_PROMPTS)[:2]
    for ids in inputs.values():
        assert len(ids) > 50 and all(isinstance(i, int) for i in ids)


def _decode(ids: list[int], rate: float = 100.0) -> bd.Decode:
    return bd.Decode(ids, len(ids), len(ids) - 1, (len(ids) - 1) / rate)


def test_the_report_checks_that_speculation_kept_the_outputs():
    same = bd.RagRow("a", 10, _decode([1, 2, 3]), _decode([1, 2, 3], 300.0), bd.PeerDecode(3, 100))
    text = "\n".join(bd.rag_report(bd.RagResult([same]), bd.QUICK))
    assert "identical" in text and "| 3.00x | 3.00x | yes |" in text
    assert "with n-gram speculation 3.00x" in text and text.endswith("holds).")

    other = bd.RagRow("b", 10, _decode([1, 2, 3]), _decode([1, 2, 4], 300.0), bd.PeerDecode(3, 100))
    text = "\n".join(bd.rag_report(bd.RagResult([same, other]), bd.QUICK))
    assert "Check FAILED: speculation changed the greedy output of: b." in text
    assert "not met: the outputs are not shown identical" in text

    skipped = bd.RagRow("a", 10, _decode([1, 2, 3]), None, None)
    result = bd.RagResult([skipped], spec_status="skipped: no field", peer_status="not found")
    text = "\n".join(bd.rag_report(result, bd.QUICK))
    assert "- radixgen + n-gram speculation: skipped: no field." in text
    assert "- llama-server: not found." in text and "not measured" in text


def test_a_run_prints_the_ratio_and_writes_its_record(tmp_path, monkeypatch, capsys):
    decode = bd.DecodeResult(150.0, [150.0], 100.0, [100.0])
    row = bd.RagRow("a", 10, _decode([1, 2, 3]), _decode([1, 2, 3], 250.0), bd.PeerDecode(3, 100))
    monkeypatch.setattr(bd, "bench_batch1", lambda *_: decode)
    monkeypatch.setattr(bd, "bench_rag", lambda *_: bd.RagResult([row]))
    assert bd.main(["--quick", "--record-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "Ratio radixgen/llama.cpp: 1.50x (target >= 1.2x: holds)" in printed
    (path,) = tmp_path.iterdir()
    assert path.name.startswith("decode-") and printed.strip() in path.read_text()
    assert "- Command: `python benchmarks/bench_decode.py --quick --record-dir" in path.read_text()


def test_the_script_offers_no_record():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_decode.py"), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "--no-record" in out.stdout and "--quick" in out.stdout
