"""Prefill and batch-1 decode of one model: radixgen against llama.cpp's `llama-bench` on the same
GGUF file (for any model radixgen loads from GGUF, e.g. `--model gemma3-270m`).

* prefill: one prompt of `--prompt-tokens` (512) seeded random token ids, `max_new_tokens` 1,
  radix cache flushed before every round; tok/s = prompt tokens / time to the first token.
  llama.cpp: `llama-bench -p 512` ("pp512").
* decode: one short prompt, `--new-tokens` (128) greedy tokens, EOS ignored, streamed; tok/s over
  the tokens after the first (benchmarks/bench_decode.py's measure). llama.cpp: `-n 128`
  ("tg128", from an empty prompt).
Each radixgen figure is the median of `--rounds` rounds after a warm-up; llama-bench repeats as
many times and its median is taken. llama-bench runs `-t 2`; radixgen uses all cores.

    python benchmarks/bench_model.py [--model gemma3-270m] [--dtype auto] [--rounds 3]
        [--prompt-tokens 512] [--new-tokens 128] [--skip-llamacpp] [--no-record]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's radixgen first

import torch  # noqa: E402

from benchmarks import peers, record  # noqa: E402
from benchmarks.bench_decode import DECODE_PROMPT, radixgen_runs  # noqa: E402
from benchmarks.servers import log  # noqa: E402
from radixgen import Engine  # noqa: E402
from radixgen.runtime.model.loader import resolve_model  # noqa: E402


def prompt_ids(vocab_size: int, length: int) -> list[int]:
    """Seeded random token ids away from the special tokens at either end of the vocabulary."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(1000, vocab_size - 1000, (length,), generator=generator).tolist()


def radixgen_prefill(engine: Engine, ids: list[int], rounds: int) -> list[float]:
    """Prompt tokens per second of `rounds` cold prefills (after a warm-up)."""
    params = {"max_new_tokens": 1, "temperature": 0, "ignore_eos": True}
    engine.generate(input_ids=ids, sampling_params=params)
    rates = []
    for _ in range(rounds):
        engine.flush_cache()
        start = time.perf_counter()
        engine.generate(input_ids=ids, sampling_params=params)
        rates.append(len(ids) / (time.perf_counter() - start))
    return rates


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "—"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2", help="a GGUF model radixgen resolves")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--skip-llamacpp", action="store_true")
    record.add_record_args(p)
    args = p.parse_args(argv)
    command = record.command_line("python benchmarks/bench_model.py", argv)
    source = resolve_model(args.model)
    if source.format != "gguf":
        raise SystemExit(f"{args.model} is not a GGUF file: llama-bench needs one")
    log(f"radixgen: {args.model}, prefill {args.prompt_tokens} and decode {args.new_tokens}")
    with Engine(model=args.model, dtype=args.dtype) as engine:
        dtype = str(engine.config.torch_dtype).removeprefix("torch.")
        vocab = engine.scheduler.runner.model_config.vocab_size
        prefill = radixgen_prefill(engine, prompt_ids(vocab, args.prompt_tokens), args.rounds)
        ids = engine.tokenizer(DECODE_PROMPT)["input_ids"]
        params = {"max_new_tokens": args.new_tokens, "temperature": 0, "ignore_eos": True}
        decode = [d.tok_s or 0.0 for d in radixgen_runs(engine, ids, params, args.rounds)]
    peer_prefill: list[float] = []
    peer_decode: list[float] = []
    status = ""
    if args.skip_llamacpp:
        status = "skipped (--skip-llamacpp)"
    elif peers.binary("llama-bench") is None:
        status = f"llama-bench not found in {peers.bin_dir()} ({peers.BUILD_HINT})"
    else:
        log("llama-bench")
        tests = peers.llama_bench_tests(
            source.path, args.new_tokens, args.rounds, args.prompt_tokens
        )
        for test in tests:
            target = peer_prefill if test.n_prompt else peer_decode
            target.extend(test.samples_tok_s)
    ratio = lambda a, b: f"{statistics.median(a) / statistics.median(b):.2f}x" if a and b else "—"
    lines = [
        f"CPU: {record.machine().describe()}",
        f"Model: {args.model} ({source.path.name}); radixgen dtype {dtype}; "
        f"llama.cpp {peers.version() or 'version unknown'} -t {peers.THREADS}"
        + (f" ({status})" if status else ""),
        "",
        "| figure | radixgen tok/s | llama.cpp tok/s | radixgen / llama.cpp |",
        "|---|---:|---:|---:|",
        f"| prefill, {args.prompt_tokens} tokens | {_cell(prefill)} | {_cell(peer_prefill)} "
        f"| {ratio(prefill, peer_prefill)} |",
        f"| decode, batch 1, {args.new_tokens} tokens | {_cell(decode)} | {_cell(peer_decode)} "
        f"| {ratio(decode, peer_decode)} |",
        "",
        f"Rounds: radixgen prefill {', '.join(f'{x:.1f}' for x in prefill)}; decode "
        f"{', '.join(f'{x:.1f}' for x in decode)}.",
    ]
    text = "\n".join(lines)
    print(text)
    settings = {"Model": args.model, "dtype": dtype, "rounds": args.rounds}
    record.save(args, "model", f"Prefill and decode: {args.model}", text, command, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
