"""The image QA workload (benchmarks/workloads/image_qa.py) at its smallest, on the tiny LLaVA:
every program finishes, the cache reaches the offline optimum's hit rate on repeated images,
and with the cache off nothing is reused (the encoder still runs once per image)."""

from __future__ import annotations

from benchmarks.workloads import image_qa


def test_image_qa_hits_the_optimum_with_the_cache_and_nothing_without(llava_dir):
    batch = image_qa.make_args(images=2, questions=2)
    on = image_qa.run_system(str(llava_dir[0]), batch, cache=True, parallel=2)
    off = image_qa.run_system(str(llava_dir[0]), batch, cache=False, parallel=2)
    for row in (on, off):
        assert row["programs"] == 4 and row["failed"] == 0
        assert row["vision_encoder_runs"] == 2
        assert row["optimal_hit_rate"] > 0.3  # the 2nd question per image reuses it
    assert on["hit_rate"] >= 0.9 * on["optimal_hit_rate"]
    assert off["hit_rate"] == 0.0
    assert "meaningless" in image_qa.markdown([on, off], "tiny", "random-weight test model")
