"""Where a decode step spends its time: batch 1 and batch 32, one table each.

The scheduler's decode step is timed whole (`Scheduler._run_decode`) and by its parts, each
measured by wrapping the live engine's objects (no code of the engine changes):

    build batch       ForwardBatch of the running requests (`build_decode`)
    plan attention    AttentionPlanner.plan, once per step
    attention         the executor's per-layer K/V store + attention, summed over layers
    output head       hidden -> logits (`LlamaForCausalLM.logits`)
    layers, rest      the rest of the model forward: embedding, projections, norms, rotary,
                      MLP, and the Python and dispatch between them
    sample            penalties, masks, temperature, the pick (`Sampler.sample`)
    append + stops    token append, incremental detokenizing, stop checks (`append_token`)
    deliver           streaming outputs to their callers (`_emit`)
    bookkeeping       the rest of the step: memory check, slot allocation, finish checks (a
                      remainder: at batch 32 it has read a fraction of a ms below zero, a gap
                      in the accounting not yet explained)

Each part's share of the step and the step's rate are printed; with the wrappers' own cost
(~1 us per wrapped call) the parts sum to slightly more than an unwrapped step. Greedy, EOS
ignored, requests streamed (as chat clients are), 2 threads by default.

    python benchmarks/bench_decode_breakdown.py [--dtype float32] [--quick] [--no-record]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import record  # noqa: E402

from radixgen import Engine  # noqa: E402
from radixgen.runtime.scheduler import loop  # noqa: E402

PARTS = (
    "build batch",
    "plan attention",
    "attention",
    "output head",
    "layers, rest",
    "sample",
    "append + stops",
    "deliver",
    "bookkeeping",
)


class StepClock:
    """Seconds spent in each part, summed over the decode steps it saw."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.steps = 0
        self.decoding = False

    def timed(self, part: str, fn: Callable) -> Callable:
        """`fn`, adding its wall time to `part` while a decode step runs."""

        def wrapper(*args, **kwargs):
            if not self.decoding:
                return fn(*args, **kwargs)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start

        return wrapper

    def step(self, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            self.decoding = True
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds["step"] += time.perf_counter() - start
                self.steps += 1
                self.decoding = False

        return wrapper

    def table(self) -> dict[str, float]:
        """ms per step of each part; "layers, rest" and "bookkeeping" are what remains."""
        per = {part: s * 1e3 / self.steps for part, s in self.seconds.items()}
        forward = per.pop("forward", 0.0)
        per["layers, rest"] = forward - sum(
            per.get(p, 0.0) for p in ("plan attention", "attention", "output head")
        )
        step = per.pop("step")
        per["bookkeeping"] = step - sum(per.get(p, 0.0) for p in PARTS if p != "bookkeeping")
        return {"step": step, **{p: per.get(p, 0.0) for p in PARTS}}


@contextlib.contextmanager
def instrumented(engine: Engine) -> Iterator[StepClock]:
    """Wrap the engine's decode step and its parts; undo on exit."""
    clock = StepClock()
    scheduler = engine.scheduler
    runner, outputs = scheduler.runner, scheduler.outputs
    patches = [
        (scheduler, "_run_decode", clock.step(scheduler._run_decode)),
        (loop, "build_decode", clock.timed("build batch", loop.build_decode)),
        (runner, "forward", clock.timed("forward", runner.forward)),
        (runner.planner, "plan", clock.timed("plan attention", runner.planner.plan)),
        (runner.attention, "forward", clock.timed("attention", runner.attention.forward)),
        (runner.model, "logits", clock.timed("output head", runner.model.logits)),
        (scheduler.sampler, "sample", clock.timed("sample", scheduler.sampler.sample)),
        (scheduler.outputs, "append_token", clock.timed("append + stops", outputs.append_token)),
        (scheduler, "_emit", clock.timed("deliver", scheduler._emit)),
    ]
    originals = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, wrapped in patches:
        setattr(obj, name, wrapped)
    try:
        yield clock
    finally:
        for obj, name, original in originals:
            if name in vars(obj) and obj is not loop:
                delattr(obj, name)  # back to the class's method
            else:
                setattr(obj, name, original)


def measure(engine: Engine, batch: int, new_tokens: int, rounds: int) -> dict[str, float]:
    """Each part's ms per step in the round of median step time (one round's parts, so they add
    up to its step), decoding `batch` streamed requests (a client thread each, as concurrent
    chat clients)."""
    prompts = [f"Story {i}: the old lighthouse keeper wrote in his log that" for i in range(batch)]
    params = {"max_new_tokens": new_tokens, "temperature": 0, "ignore_eos": True}
    engine.generate(prompts, params)  # warm-up
    tables = []
    for _ in range(rounds):
        engine.flush_cache()
        with instrumented(engine) as clock, ThreadPoolExecutor(batch) as pool:
            list(
                pool.map(lambda prompt: list(engine.generate(prompt, params, stream=True)), prompts)
            )
        tables.append(clock.table())
    return sorted(tables, key=lambda t: t["step"])[len(tables) // 2]


def report(results: dict[int, dict[str, float]], dtype: str, fused: bool) -> str:
    how = (
        "the fused decode step (attention and every layer in one call: 'layers, rest')"
        if fused
        else "per-operation passes (--per-operation)"
    )
    lines = [
        f"dtype: {dtype}; {how}; greedy, EOS ignored, streamed; ms per decode step"
        " (the round of median step time)",
        "",
        "| part | " + " | ".join(f"batch {b}: ms | share" for b in results) + " |",
        "|---|" + "---:|---:|" * len(results),
    ]
    for part in PARTS:
        cells = [f"{r[part]:.2f} | {100 * r[part] / r['step']:.0f}%" for r in results.values()]
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    steps = [f"{r['step']:.2f} | {b * 1e3 / r['step']:.0f} tok/s" for b, r in results.items()]
    lines.append("| **whole step** | " + " | ".join(steps) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="few tokens, one round: a smoke run")
    parser.add_argument(
        "--per-operation",
        action="store_true",
        help="run the model operation by operation (no fused decode step), so attention and "
        "the output head are timed apart from the layers",
    )
    record.add_record_args(parser)
    args = parser.parse_args(argv)
    command = record.command_line("python benchmarks/bench_decode_breakdown.py", argv)
    sizes = {1: 8, 4: 4} if args.quick else {1: 128, 32: 64}
    rounds = 1 if args.quick else args.rounds
    with Engine(
        model="smollm2", dtype=args.dtype, disable_fused_decode=args.per_operation
    ) as engine:
        dtype = str(engine.config.torch_dtype).removeprefix("torch.")
        fused = engine.scheduler.runner.fused_decode is not None
        results = {b: measure(engine, b, n, rounds) for b, n in sizes.items()}
    text = report(results, dtype, fused)
    print(text)
    title = "Decode step breakdown" + (", --quick smoke run" * args.quick)
    settings = {
        "Model": "smollm2",
        "dtype": record.dtype_label(args.dtype),
        "rounds": rounds,
        "fused decode step": "on" if fused else "off",
    }
    record.save(args, "decode-breakdown", title, text, command, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
