"""Throughput benchmark: radixgen vs llama.cpp (llama-cpp-python) on the same GGUF model.

Prints one Markdown table (for a record under docs/benchmarks) plus machine info and ratios.

What is measured, and how (all prompts are token ids built once, from seeded random text, with
radixgen's tokenizer of the model, and fed to both systems as ids, so both see identical tokens):

* prefill tok/s: one ~512-token prompt with max_new_tokens=0 (radixgen) / `Llama.eval` (llama.cpp).
  The radix cache is flushed (llama.cpp: `reset()`) before every repetition, so nothing is reused.
  Value = prompt tokens / wall time of the call; median of a few repetitions after one warm-up.
* decode tok/s (bs=1): one short prompt, 128 new tokens, greedy, EOS ignored, streamed.
  Value = (completion tokens - 1) / (time of last token - time of first token), i.e. the prefill
  and the first token (TTFT) are excluded. Median of a few repetitions.
* decode tok/s (32 concurrent): 32 different short prompts, 64 new tokens each, EOS ignored.
  radixgen gets them as one batch (continuous batching); the llama-cpp-python binding has no
  batching, so llama.cpp runs them one after another (marked "seq"). Value = all generated tokens
  / wall time of the whole workload (this includes the short prefills).
* shared-prefix: a ~1,000-token 5-shot QA prefix + 64 distinct questions, 16 new tokens each.
  radixgen: all 64 submitted at once as one batch, radix cache flushed first, with the radix
  cache ON (Engine default) and OFF (`disable_radix_cache=True`). llama.cpp: the 64 requests run
  sequentially; llama-cpp-python automatically reuses the KV of the longest common prefix with the
  previous prompt ("reuse ON"), and calling `reset()` before each request disables that ("OFF").
  Values = requests/s and generated tok/s over the wall time of the workload, and the cache hit
  rate = sum(cached prompt tokens) / sum(prompt tokens). For radixgen the cached tokens come from
  meta_info["cached_tokens"] (cross-checked against engine.stats()); for llama.cpp they are the
  common prefix with the KV already in the context, computed the way llama-cpp-python does it.

Both systems load the same GGUF file (SmolLM2-135M-Instruct, Q4_1): llama.cpp computes with the
quantized weights, radixgen dequantizes them to `--dtype`. llama.cpp gets n_threads=2, n_ctx=4096,
n_batch=512, logits_all=False; torch uses the Engine's default (all cores).

Only one engine is alive at a time. `--quick` shrinks every size so the run is a ~1 minute smoke
check; its numbers are not meaningful.

    python benchmarks/bench_runtime.py [--quick] [--dtype bfloat16] [--json out.json]
                                       [--skip-llamacpp] [--no-record]

Prints the report on stdout and, unless `--no-record`, writes it with the machine's facts to a
record docs/benchmarks/runtime-<date>[-N].md (benchmarks/record.py).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import record
import torch

from radixgen import Engine
from radixgen.runtime.config import DTYPE_CHOICES
from radixgen.runtime.model.loader import default_model_path, resolve_model
from radixgen.runtime.tokenizer import load_tokenizer

MODEL = "smollm2"
SEED = 1234
LLAMA_INSTALL_HINT = "llama.cpp: not installed (pip install llama-cpp-python)"


def log(msg: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- sizes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    prefill_tokens: int = 512
    prefill_reps: int = 3
    decode_tokens: int = 128
    decode_reps: int = 3
    concurrent: int = 32
    concurrent_tokens: int = 64
    shots: int = 5
    prefix_tokens: int = 1000
    questions: int = 64
    answer_tokens: int = 16


QUICK = Sizes(
    prefill_tokens=256,
    prefill_reps=2,
    decode_tokens=32,
    decode_reps=1,
    concurrent=8,
    concurrent_tokens=16,
    shots=2,
    prefix_tokens=300,
    questions=8,
    answer_tokens=4,
)


# --- deterministic workloads ------------------------------------------------------------------

ADJECTIVES = ("old", "red", "quiet", "bright", "northern", "hidden", "narrow", "busy", "golden")
NOUNS = ("library", "harbor", "garden", "tower", "market", "bridge", "museum", "station", "school")
CITIES = ("Avalon", "Brindle", "Corvale", "Dunmore", "Eastwick", "Falkirk", "Glenrock", "Harwick")
THINGS = ("lamps", "benches", "windows", "statues", "trees", "doors", "boats", "books", "clocks")
TOPICS = ("a dragon", "the sea", "a lost key", "winter", "a robot", "the moon", "a storm")


@dataclass
class Workloads:
    prefill: list[int]
    decode: list[int]
    concurrent: list[list[int]]
    shared_prefix: list[int]
    shared: list[list[int]] = field(default_factory=list)


def _fact(rng: random.Random) -> tuple[str, str, str, int]:
    """One random fact: its sentence, its subject, what is counted, and the count."""
    subject = f"the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} of {rng.choice(CITIES)}"
    things, n = rng.choice(THINGS), rng.randint(2, 99)
    return f"{subject[0].upper()}{subject[1:]} has {n} {things}.", subject, things, n


def _qa_shot(rng: random.Random, n_facts: int, with_answer: bool) -> str:
    """A context of random facts, a question about one of them and (optionally) its answer."""
    facts = [_fact(rng) for _ in range(n_facts)]
    _, subject, things, answer = rng.choice(facts)
    text = "Context: " + " ".join(f[0] for f in facts)
    text += f"\nQuestion: How many {things} does {subject} have?\nAnswer:"
    return text + (f" {answer}\n\n" if with_answer else "")


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _prefill_prompt(tokenizer: Any, rng: random.Random, n_tokens: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n_tokens:
        ids += _ids(tokenizer, " ".join(_fact(rng)[0] for _ in range(20)) + " ")
    return ids[:n_tokens]


def _few_shot_prefix(tokenizer: Any, rng: random.Random, shots: int, n_tokens: int) -> list[int]:
    """`shots` QA examples whose contexts grow until the prefix has at least `n_tokens` tokens."""
    header = "Answer each question using only its context.\n\n"
    n_facts = 1
    while True:
        state = rng.getstate()
        text = header + "".join(_qa_shot(rng, n_facts, True) for _ in range(shots))
        ids = _ids(tokenizer, text)
        if len(ids) >= n_tokens:
            return ids
        rng.setstate(state)  # same seed stream, one more fact per shot
        n_facts += 1


def _story_prompt(i: int) -> str:
    """The i-th of the distinct short prompts of the concurrent-decode workload."""
    topic, city = TOPICS[i % len(TOPICS)], CITIES[(i // len(TOPICS)) % len(CITIES)]
    return f"Write a short story about {topic} in {city}, chapter {i + 1}:"


def build_workloads(tokenizer: Any, sizes: Sizes) -> Workloads:
    rng = random.Random(SEED)
    prefix = _few_shot_prefix(tokenizer, rng, sizes.shots, sizes.prefix_tokens)
    seen: set[str] = set()
    questions: list[str] = []
    while len(questions) < sizes.questions:
        q = _qa_shot(rng, 2, False)
        if q not in seen:
            seen.add(q)
            questions.append(q)
    return Workloads(
        prefill=_prefill_prompt(tokenizer, rng, sizes.prefill_tokens),
        decode=_ids(tokenizer, "Once upon a time, in a quiet village by the sea,"),
        concurrent=[_ids(tokenizer, _story_prompt(i)) for i in range(sizes.concurrent)],
        shared_prefix=prefix,
        shared=[prefix + _ids(tokenizer, q) for q in questions],
    )


# --- results ----------------------------------------------------------------------------------


@dataclass
class SharedResult:
    requests: int
    seconds: float
    req_per_s: float
    gen_tok_per_s: float
    prompt_tokens: int
    cached_tokens: int
    hit_rate: float
    stats_hit_rate: float | None = None  # radixgen: engine.stats() counter delta


@dataclass
class SystemResult:
    key: str  # radixgen | radixgen_off | llamacpp | llamacpp_off
    system: str
    prefill_tok_s: float | None = None
    prefill_runs: list[float] = field(default_factory=list)
    ttft_s: float | None = None
    decode_tok_s: float | None = None
    concurrent_tok_s: float | None = None
    concurrent_note: str = ""
    shared: SharedResult | None = None
    note: str = ""


def _median_runs(fn: Callable[[], float], reps: int) -> tuple[float, list[float]]:
    runs = [fn() for _ in range(reps)]
    return statistics.median(runs), runs


def _median_decode(fn: Callable[[], tuple[float, float]], reps: int) -> tuple[float, float]:
    """Median TTFT and median decode tok/s over `reps` runs of `fn`."""
    runs = [fn() for _ in range(reps)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def _shared_result(n: int, seconds: float, gen: int, prompt: int, cached: int) -> SharedResult:
    return SharedResult(
        requests=n,
        seconds=seconds,
        req_per_s=n / seconds,
        gen_tok_per_s=gen / seconds,
        prompt_tokens=prompt,
        cached_tokens=cached,
        hit_rate=cached / prompt if prompt else 0.0,
    )


def _decode_rate(stamps: list[float]) -> float:
    """Tokens after the first / time between the first and the last token."""
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        return float("nan")
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


# --- radixgen ---------------------------------------------------------------------------------


def _params(max_new_tokens: int) -> dict[str, Any]:
    return {"max_new_tokens": max_new_tokens, "temperature": 0, "ignore_eos": True}


def _flush(engine: Engine) -> None:
    if not engine.flush_cache():
        raise RuntimeError("engine.flush_cache() refused: requests are still active")


def _rg_warmup(engine: Engine, w: Workloads) -> None:
    engine.generate(input_ids=w.prefill, sampling_params=_params(2))
    engine.generate(input_ids=w.concurrent[:4], sampling_params=_params(2))
    _flush(engine)


def _rg_prefill(engine: Engine, ids: list[int]) -> float:
    _flush(engine)
    t0 = time.perf_counter()
    out = engine.generate(input_ids=ids, sampling_params=_params(0))
    seconds = time.perf_counter() - t0
    if out["meta_info"]["cached_tokens"]:
        raise RuntimeError("prefill run reused cached tokens despite the flush")
    return len(ids) / seconds


def _rg_decode(engine: Engine, ids: list[int], n: int) -> tuple[float, float]:
    """(TTFT seconds, decode tok/s) from the streamed outputs of one request."""
    _flush(engine)
    stamps: list[float] = []
    seen = 0
    t0 = time.perf_counter()
    for out in engine.generate(input_ids=ids, sampling_params=_params(n), stream=True):
        now = time.perf_counter()
        count = out["meta_info"]["completion_tokens"]
        stamps += [now] * (count - seen)  # a chunk may carry several new tokens
        seen = count
    if seen != n:
        raise RuntimeError(f"decode run produced {seen} tokens, expected {n}")
    return stamps[0] - t0, _decode_rate(stamps)


def _rg_concurrent(engine: Engine, prompts: list[list[int]], n: int) -> float:
    _flush(engine)
    t0 = time.perf_counter()
    outs = engine.generate(input_ids=prompts, sampling_params=_params(n))
    seconds = time.perf_counter() - t0
    return sum(o["meta_info"]["completion_tokens"] for o in outs) / seconds


def _rg_shared(engine: Engine, prompts: list[list[int]], n: int) -> SharedResult:
    _flush(engine)
    before = engine.stats()
    t0 = time.perf_counter()
    outs = engine.generate(input_ids=prompts, sampling_params=_params(n))
    seconds = time.perf_counter() - t0
    after = engine.stats()
    metas = [o["meta_info"] for o in outs]
    result = _shared_result(
        len(prompts),
        seconds,
        sum(m["completion_tokens"] for m in metas),
        sum(m["prompt_tokens"] for m in metas),
        sum(m["cached_tokens"] for m in metas),
    )
    d_prompt = after["prompt_tokens"] - before["prompt_tokens"]
    d_cached = after["cached_tokens"] - before["cached_tokens"]
    result.stats_hit_rate = d_cached / d_prompt if d_prompt else 0.0
    return result


def _kv_tokens(w: Workloads, sizes: Sizes) -> int:
    """A KV pool large enough for the whole shared-prefix batch without any sharing."""
    need = sum(len(p) + sizes.answer_tokens for p in w.shared)
    return max(65536, need + 4096)


def run_radixgen(w: Workloads, sizes: Sizes, dtype: str, info: dict[str, Any]) -> list:
    kv = _kv_tokens(w, sizes)
    on = SystemResult("radixgen", "radixgen (radix cache ON)")
    with Engine(model=MODEL, dtype=dtype, kv_cache_tokens=kv) as engine:
        info["torch_threads"] = torch.get_num_threads()
        _rg_warmup(engine, w)
        log("radixgen: prefill, decode bs=1, concurrent decode")
        on.prefill_tok_s, on.prefill_runs = _median_runs(
            lambda: _rg_prefill(engine, w.prefill), sizes.prefill_reps
        )
        on.ttft_s, on.decode_tok_s = _median_decode(
            lambda: _rg_decode(engine, w.decode, sizes.decode_tokens), sizes.decode_reps
        )
        on.concurrent_tok_s = _rg_concurrent(engine, w.concurrent, sizes.concurrent_tokens)
        on.concurrent_note = "batched"
        log("radixgen: shared-prefix, radix cache ON")
        on.shared = _rg_shared(engine, w.shared, sizes.answer_tokens)
    off = SystemResult("radixgen_off", "radixgen (radix cache OFF)")
    log("radixgen: loading (radix cache OFF)")
    with Engine(model=MODEL, dtype=dtype, kv_cache_tokens=kv, disable_radix_cache=True) as engine:
        _rg_warmup(engine, w)
        log("radixgen: shared-prefix, radix cache OFF")
        off.shared = _rg_shared(engine, w.shared, sizes.answer_tokens)
    return [on, off]


# --- llama.cpp --------------------------------------------------------------------------------


def _llama_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def _llama_tokens(llm: Any, ids: list[int], n: int) -> Iterator[int]:
    """Greedy generation of exactly `n` tokens (EOS ignored: we stop by count). `generate`
    reuses the KV of the prefix shared with the tokens already in the context."""
    gen = llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0)
    try:
        for i, token in enumerate(gen):
            yield token
            if i + 1 >= n:
                break
    finally:
        gen.close()


def _lc_prefill(llm: Any, ids: list[int]) -> float:
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    return len(ids) / (time.perf_counter() - t0)


def _lc_decode(llm: Any, ids: list[int], n: int) -> tuple[float, float]:
    llm.reset()
    stamps: list[float] = []
    t0 = time.perf_counter()
    for _ in _llama_tokens(llm, ids, n):
        stamps.append(time.perf_counter())
    if len(stamps) != n:
        raise RuntimeError(f"llama.cpp produced {len(stamps)} tokens, expected {n}")
    return stamps[0] - t0, _decode_rate(stamps)


def _lc_reusable(llm: Any, ids: list[int]) -> int:
    """Prompt tokens llama-cpp-python will take from the KV already in the context: the longest
    common prefix of the evaluated tokens and the prompt, minus one if that is the whole prompt
    (the last prompt token is always evaluated again, to get fresh logits)."""
    n = 0
    for a, b in zip(llm.input_ids[: llm.n_tokens].tolist(), ids, strict=False):
        if a != b:
            break
        n += 1
    return min(n, len(ids) - 1)


def _lc_sequential(llm: Any, prompts: list[list[int]], n: int, reuse: bool) -> SharedResult:
    llm.reset()
    generated = cached = 0
    t0 = time.perf_counter()
    for ids in prompts:
        if not reuse:
            llm.reset()
        cached += _lc_reusable(llm, ids)
        generated += sum(1 for _ in _llama_tokens(llm, ids, n))
    seconds = time.perf_counter() - t0
    return _shared_result(len(prompts), seconds, generated, sum(map(len, prompts)), cached)


def run_llamacpp(w: Workloads, sizes: Sizes, info: dict[str, Any]) -> list:
    import llama_cpp

    info["llama_cpp_python"] = llama_cpp.__version__
    llm = llama_cpp.Llama(
        model_path=str(default_model_path()),
        n_threads=2,
        n_ctx=4096,
        n_batch=512,
        logits_all=False,
        verbose=False,
    )
    try:
        return _llamacpp_results(llm, w, sizes)
    finally:
        if hasattr(llm, "close"):  # older llama-cpp-python versions free on __del__ only
            llm.close()


def _llamacpp_results(llm: Any, w: Workloads, sizes: Sizes) -> list[SystemResult]:
    on = SystemResult("llamacpp", "llama.cpp (prefix reuse ON)")
    on.note = "llama-cpp-python reuses the KV of the prefix shared with the previous prompt"
    log("llama.cpp: prefill, decode bs=1")
    _lc_prefill(llm, w.prefill)  # warm-up
    on.prefill_tok_s, on.prefill_runs = _median_runs(
        lambda: _lc_prefill(llm, w.prefill), sizes.prefill_reps
    )
    on.ttft_s, on.decode_tok_s = _median_decode(
        lambda: _lc_decode(llm, w.decode, sizes.decode_tokens), sizes.decode_reps
    )
    log("llama.cpp: concurrent (sequential), shared-prefix with prefix reuse ON")
    conc = _lc_sequential(llm, w.concurrent, sizes.concurrent_tokens, reuse=True)
    on.concurrent_tok_s, on.concurrent_note = conc.gen_tok_per_s, "seq"
    on.shared = _lc_sequential(llm, w.shared, sizes.answer_tokens, reuse=True)
    off = SystemResult("llamacpp_off", "llama.cpp (prefix reuse OFF)")
    log("llama.cpp: shared-prefix, prefix reuse OFF")
    off.shared = _lc_sequential(llm, w.shared, sizes.answer_tokens, reuse=False)
    return [on, off]


# --- report -----------------------------------------------------------------------------------


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "—" if x is None else fmt.format(x)


def _row(r: SystemResult) -> str:
    conc = _num(r.concurrent_tok_s)
    if r.concurrent_tok_s is not None and r.concurrent_note == "seq":
        conc += " (seq)"
    shared = hit = "—"
    if r.shared is not None:
        shared = f"{r.shared.req_per_s:.2f} ({r.shared.gen_tok_per_s:.1f} tok/s)"
        hit = f"{100 * r.shared.hit_rate:.1f}%"
    cells = [r.system, _num(r.prefill_tok_s), _num(r.decode_tok_s), conc, shared, hit]
    return "| " + " | ".join(cells) + " |"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def _ratios(results: list[SystemResult]) -> str:
    by = {r.key: r for r in results}
    rg, rg_off = by.get("radixgen"), by.get("radixgen_off")
    lc, lc_off = by.get("llamacpp"), by.get("llamacpp_off")
    shared = lambda r: r.shared.req_per_s if r and r.shared else None  # noqa: E731
    parts = [f"radixgen shared-prefix cache ON/OFF: {_ratio(shared(rg), shared(rg_off))}"]
    if lc:
        parts += [
            f"llama.cpp shared-prefix reuse ON/OFF: {_ratio(shared(lc), shared(lc_off))}",
            f"radixgen/llama.cpp prefill: {_ratio(rg.prefill_tok_s, lc.prefill_tok_s)}",
            f"radixgen/llama.cpp decode bs=1: {_ratio(rg.decode_tok_s, lc.decode_tok_s)}",
            f"radixgen/llama.cpp 32-concurrent: {_ratio(rg.concurrent_tok_s, lc.concurrent_tok_s)}",
            f"radixgen/llama.cpp shared-prefix (cache ON): {_ratio(shared(rg), shared(lc))}",
        ]
    else:
        parts += ["radixgen/llama.cpp prefill: n/a", "radixgen/llama.cpp decode: n/a"]
    return "Ratios: " + "; ".join(parts) + "."


def report(
    results: list[SystemResult], sizes: Sizes, w: Workloads, info: dict, llama_status: str
) -> str:
    """The printed report (and the record's body): settings, workloads, table, notes, ratios."""
    lines = [
        ", ".join(f"{k}: {v}" for k, v in info.items()),
        f"Workloads: prefill {len(w.prefill)} tok; decode bs=1 {len(w.decode)}-tok prompt + "
        f"{sizes.decode_tokens} new; {sizes.concurrent} concurrent x "
        f"{sizes.concurrent_tokens} new; "
        f"shared prefix {len(w.shared_prefix)} tok ({sizes.shots}-shot) + {sizes.questions} "
        f"questions ({min(map(len, w.shared)) - len(w.shared_prefix)}-"
        f"{max(map(len, w.shared)) - len(w.shared_prefix)} tok) x {sizes.answer_tokens} new.",
        "",
        "| system | prefill tok/s | decode tok/s (bs=1) | decode tok/s (32 concurrent) "
        "| shared-prefix req/s | cache hit rate |",
        "|---|---:|---:|---:|---:|---:|",
        *(_row(r) for r in results),
    ]
    if llama_status:  # llama.cpp skipped or not installed: say so in its place in the table
        lines.append(f"| {llama_status} | — | — | — | — | — |")
    lines += [
        "",
        "prefill: median, cache flushed each run. decode bs=1: (completion tokens - 1) / "
        "(last token time - first token time), i.e. TTFT excluded. 32 concurrent: generated "
        "tokens / wall time (incl. prefills); (seq) = run one after another, no batching in "
        "llama-cpp-python. shared-prefix: req/s (generated tok/s); radixgen submits all "
        "requests as one batch, llama.cpp runs them sequentially and reuses the KV of the "
        "prefix common with the previous prompt automatically.",
    ]
    ttft = [f"{r.system.split(' ')[0]} {1000 * r.ttft_s:.0f} ms" for r in results if r.ttft_s]
    lines.append("Time to first token (bs=1 decode prompt): " + ", ".join(ttft) + ".")
    for r in results:
        s = r.shared
        if s and s.stats_hit_rate is not None and abs(s.stats_hit_rate - s.hit_rate) > 1e-6:
            lines.append(
                f"warning: {r.system}: meta_info hit rate {s.hit_rate:.4f} != engine.stats() "
                f"delta {s.stats_hit_rate:.4f}"
            )
    lines.append(_ratios(results))
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------


def run_settings(dtype: str, quick: bool) -> dict[str, Any]:
    """What the run was asked to do; the machine's facts are the record's (benchmarks/record.py)."""
    return {
        "torch_threads": torch.get_num_threads(),
        "dtype": record.dtype_label(dtype),
        "model": default_model_path().name,
        "mode": "quick" if quick else "full",
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a ~1 minute smoke check")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON here")
    p.add_argument("--skip-llamacpp", action="store_true", help="do not run llama.cpp")
    record.add_record_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    command = record.command_line("python benchmarks/bench_runtime.py", argv)
    info = run_settings(args.dtype, args.quick)
    workloads = build_workloads(load_tokenizer(resolve_model(MODEL)), sizes)
    log("radixgen: loading (radix cache ON)")
    results = run_radixgen(workloads, sizes, args.dtype, info)
    llama_status = ""
    if args.skip_llamacpp:
        llama_status = "llama.cpp: skipped (--skip-llamacpp)"
    elif _llama_available():
        log("llama.cpp: loading")
        results += run_llamacpp(workloads, sizes, info)
    else:
        llama_status = LLAMA_INSTALL_HINT
    text = report(results, sizes, workloads, info, llama_status)
    print(text)
    title = "Runtime benchmark" + (", --quick smoke run" * args.quick)
    record.save(args, "runtime", title, text, command)
    if args.json:
        payload = {"info": info, "sizes": asdict(sizes), "results": [asdict(r) for r in results]}
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
