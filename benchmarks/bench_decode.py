"""Decode benchmark: radixgen's batch-1 decode against llama.cpp on the same GGUF, then an
extraction/RAG workload (answers copied from the prompt) with and without n-gram speculation.

Part 1, batch-1 decode (llama.cpp's "tg128"):
* radixgen: the in-process `Engine` as the server runs it (dtype `--dtype`, default "auto"; all
  cores), one request at a time from a short prompt, greedy, `--new-tokens` (128) new tokens,
  EOS ignored, streamed. tok/s = (tokens at the end - tokens at the first chunk) / (time of the
  end - time of the first chunk): the prefill and the first token are left out, as llama-bench
  leaves them out. The radix cache is flushed before every round; one warm-up round first.
* llama.cpp: `llama-bench -m GGUF -t 2 -p 0 -n 128 -r ROUNDS -o json` (benchmarks/peers.py finds
  the C++ build), the median of its per-repetition tok/s.
Each side's figure is the median of `--rounds` rounds; the ratio is radixgen / llama.cpp.

Part 2, extraction/RAG: a few fixed prompts whose answers copy from the prompt (repeat a
paragraph, quote the sentences that answer a question, correct a text's spelling, list matching
records), as chat messages rendered with the model's template and sent as the same
token ids to every system. Greedy, at most `--rag-tokens` (128) new tokens, EOS honoured (the
answers end by themselves). Systems, one alive at a time:
* radixgen without speculation (the default engine);
* radixgen with `EngineConfig(speculative_algorithm="ngram")` (drafts from the request's own
  prompt and output). Where this checkout's EngineConfig has no such field the row says so and
  the run goes on without it;
* llama.cpp's `llama-server` with 1 slot, `POST /completion` with the token ids,
  `temperature 0`; tok/s = its response's `timings.predicted_per_second`.
radixgen's tok/s is measured as in part 1. Per prompt each system's figure is the median of the
rounds; the "all prompts" row is all decode tokens / all decode seconds of those median rounds.
The check: radixgen's output token ids with and without speculation are identical for every
prompt (speculation must not change greedy output). With speculation, the acceptance
(`meta_info` `spec_accepted_tokens` / `spec_draft_tokens`) is printed when the engine reports it.

    python benchmarks/bench_decode.py [--quick] [--dtype auto] [--rounds 5] [--new-tokens 128]
        [--rag-tokens 128] [--skip-llamacpp] [--skip-rag] [--json out.json] [--no-record]

`--quick`: 1 round, 32 tokens, 2 prompts; a smoke check whose numbers mean nothing. The report
(naming the CPU and its flags) goes to stdout and, unless `--no-record`, with the machine's facts
to a record docs/benchmarks/decode-<date>[-N].md (benchmarks/record.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's radixgen first

import httpx  # noqa: E402

from benchmarks import peers, record  # noqa: E402
from benchmarks.servers import log, running_server  # noqa: E402
from radixgen import Engine  # noqa: E402
from radixgen.runtime.config import EngineConfig  # noqa: E402

MODEL = "smollm2"
DECODE_PROMPT = "Once upon a time"
DECODE_TARGET = 1.2  # issue 27: batch-1 decode >= 1.2x llama.cpp without speculation
RAG_TARGET = 2.0  # ... and >= 2x with n-gram speculation on the extraction/RAG workload
REQUEST_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Sizes:
    rounds: int = 5
    new_tokens: int = 128
    rag_tokens: int = 128
    rag_prompts: int | None = None  # None: all of them


QUICK = Sizes(rounds=1, new_tokens=32, rag_tokens=32, rag_prompts=2)


# --- the extraction/RAG prompts ---------------------------------------------------------------

_PARAGRAPH = (
    "The lighthouse on Gull Point was built in 1871 from granite quarried on the island itself. "
    "Its lamp burned whale oil until 1890, then kerosene, and from 1932 an electric bulb of "
    "1,000 watts whose beam reached twenty-two nautical miles. The last keeper, Martha Ellison, "
    "left in 1964, when the light was automated; the keeper's cottage is now a small museum "
    "that opens every summer from June to September."
)
_CONTEXT = (
    "The Brindle river rises in the Corvale hills and flows 212 kilometres to the sea. "
    "Its largest tributary is the Dunmore, which joins it at the town of Eastwick. "
    "The river was canalised between 1820 and 1834 to carry coal to the port of Harwick. "
    "A flood in 1953 destroyed the old stone bridge at Eastwick and two mills upstream. "
    "Today the river is a nature reserve, home to otters, kingfishers and brown trout."
)
_ORDERS = "\n".join(
    f"order {1000 + i}: {item}, {qty} units, shipped to {city}"
    for i, (item, qty, city) in enumerate(
        [
            ("copper wire", 40, "Berlin"),
            ("steel bolts", 500, "Lyon"),
            ("oak planks", 12, "Berlin"),
            ("glass panes", 30, "Porto"),
            ("brass hinges", 220, "Berlin"),
            ("rubber seals", 75, "Lyon"),
            ("clay bricks", 900, "Berlin"),
        ]
    )
)
_TYPOS = (
    "The comittee met on Tuesday to discus the new budjet. After a long debate, the members "
    "agreed to fund the libary repairs and to postpone the new playgound until next year. "
    "The chairman thanked everyone for there patience and closed the meeting at nine oclock."
)

RAG_PROMPTS: dict[str, str] = {
    "repeat a paragraph": f"Repeat the following paragraph word for word.\n\n{_PARAGRAPH}",
    "quote the answer": (
        f"Context:\n{_CONTEXT}\n\nQuestion: What happened to the river and its towns between "
        "1820 and 1953? Answer by quoting the relevant sentences of the context exactly."
    ),
    "fix the spelling": (
        "Fix the spelling mistakes in the following text and return the whole corrected text."
        f"\n\n{_TYPOS}"
    ),
    "list matching records": (
        f"Here are some orders:\n{_ORDERS}\n\nRepeat the list above, but only the orders "
        "shipped to Berlin."
    ),
}
"""Prompts whose answers (SmolLM2-135M's, greedy) copy long runs of the prompt, correct or not:
the case prompt-lookup speculation is for."""


# --- radixgen ---------------------------------------------------------------------------------


@dataclass
class Decode:
    """One streamed request: its output, and the decode part of its timing."""

    output_ids: list[int]
    tokens: int
    decode_tokens: int  # tokens after the first chunk
    decode_s: float  # first chunk -> end
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def tok_s(self) -> float | None:
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else None


def stream_decode(engine: Engine, input_ids: list[int], params: dict[str, Any]) -> Decode:
    """Run one request streamed and time its decode (first chunk to the end)."""
    first_t = first_n = None
    out: dict[str, Any] = {}
    for out in engine.generate(input_ids=input_ids, sampling_params=params, stream=True):
        n = out["meta_info"]["completion_tokens"]
        if first_t is None and n > 0:
            first_t, first_n = time.perf_counter(), n
    end = time.perf_counter()
    n = out["meta_info"]["completion_tokens"]
    if first_t is None:
        return Decode(list(out["output_ids"]), n, 0, 0.0, out["meta_info"])
    return Decode(list(out["output_ids"]), n, n - first_n, end - first_t, out["meta_info"])


def median_run(runs: list[Decode]) -> Decode:
    """The round of median decode rate (the lower middle one of an even count)."""
    ranked = sorted(runs, key=lambda d: d.tok_s or 0.0)
    return ranked[(len(ranked) - 1) // 2]


def radixgen_runs(
    engine: Engine, input_ids: list[int], params: dict[str, Any], rounds: int
) -> list[Decode]:
    """A warm-up, then `rounds` measured rounds, each from an empty cache."""
    stream_decode(engine, input_ids, params)
    runs = []
    for _ in range(rounds):
        engine.flush_cache()
        runs.append(stream_decode(engine, input_ids, params))
    return runs


def set_fused_decode(engine: Engine, path: Any) -> None:
    """Switch the engine's fused decode step (`ModelRunner.fused_decode`; None: per-operation
    passes) on its scheduler thread, between requests."""
    runner = engine.scheduler.runner
    engine.scheduler.call(lambda: setattr(runner, "fused_decode", path)).result()


def paired_fused_runs(
    engine: Engine, input_ids: list[int], params: dict[str, Any], rounds: int
) -> tuple[list[Decode], list[Decode]]:
    """(fused rounds, per-operation rounds), interleaved round by round in one engine so
    that drift in the host's speed falls on both alike. Without a fused path: ([...], [])."""
    path = getattr(engine.scheduler.runner, "fused_decode", None)
    if path is None:
        return radixgen_runs(engine, input_ids, params, rounds), []
    fused, per_operation = [], []
    stream_decode(engine, input_ids, params)
    try:
        for _ in range(rounds):
            for on, runs in ((True, fused), (False, per_operation)):
                set_fused_decode(engine, path if on else None)
                engine.flush_cache()
                runs.append(stream_decode(engine, input_ids, params))
    finally:
        set_fused_decode(engine, path)
    return fused, per_operation


def speculation_available() -> bool:
    """Whether this checkout's EngineConfig has n-gram speculation (issue 27, stream S)."""
    return "speculative_algorithm" in {f.name for f in dataclasses.fields(EngineConfig)}


# --- llama.cpp --------------------------------------------------------------------------------


@dataclass
class PeerDecode:
    tokens: int
    tok_s: float | None
    output_ids: list[int] = field(default_factory=list)


def parse_completion(body: dict[str, Any]) -> PeerDecode:
    """llama-server's `/completion` answer: tokens generated and its decode rate."""
    timings = body.get("timings") or {}
    tokens = int(timings.get("predicted_n", body.get("tokens_predicted", 0)))
    rate = timings.get("predicted_per_second")
    return PeerDecode(tokens, float(rate) if rate else None, list(body.get("tokens") or []))


def peer_completion(root: str, input_ids: list[int], max_tokens: int) -> PeerDecode:
    body = {
        "prompt": input_ids,
        "n_predict": max_tokens,
        "temperature": 0,
        "return_tokens": True,
        "stream": False,
    }
    r = httpx.post(root + "/completion", json=body, timeout=REQUEST_TIMEOUT_S)
    r.raise_for_status()
    return parse_completion(r.json())


# --- the parts --------------------------------------------------------------------------------


@dataclass
class DecodeResult:
    radixgen_tok_s: float | None = None
    radixgen_rounds: list[float] = field(default_factory=list)
    llama_tok_s: float | None = None
    llama_rounds: list[float] = field(default_factory=list)
    llama_status: str = ""
    per_operation_tok_s: float | None = None  # the fused decode step off (None: no fused path)
    per_operation_rounds: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.radixgen_tok_s and self.llama_tok_s:
            return self.radixgen_tok_s / self.llama_tok_s
        return None

    @property
    def fused_ratio(self) -> float | None:
        if self.radixgen_tok_s and self.per_operation_tok_s:
            return self.radixgen_tok_s / self.per_operation_tok_s
        return None


def bench_batch1(sizes: Sizes, dtype: str, skip_llamacpp: bool) -> DecodeResult:
    result = DecodeResult()
    params = {"max_new_tokens": sizes.new_tokens, "temperature": 0, "ignore_eos": True}
    log(f"radixgen: batch-1 decode, {sizes.new_tokens} tokens, {sizes.rounds} rounds")
    with Engine(model=MODEL, dtype=dtype) as engine:
        ids = engine.tokenizer(DECODE_PROMPT)["input_ids"]
        runs, per_operation = paired_fused_runs(engine, ids, params, sizes.rounds)
    result.radixgen_rounds = [d.tok_s or 0.0 for d in runs]
    result.radixgen_tok_s = statistics.median(result.radixgen_rounds)
    if per_operation:
        result.per_operation_rounds = [d.tok_s or 0.0 for d in per_operation]
        result.per_operation_tok_s = statistics.median(result.per_operation_rounds)
    if skip_llamacpp:
        result.llama_status = "skipped (--skip-llamacpp)"
    elif peers.binary("llama-bench") is None:
        result.llama_status = f"llama-bench not found in {peers.bin_dir()} ({peers.BUILD_HINT})"
    else:
        from radixgen.runtime.model.loader import default_model_path

        log(f"llama-bench: tg{sizes.new_tokens}, {sizes.rounds} repetitions")
        try:
            run = peers.run_llama_bench(default_model_path(), sizes.new_tokens, sizes.rounds)
            result.llama_rounds = list(run.samples_tok_s)
            result.llama_tok_s = run.median_tok_s
        except (RuntimeError, OSError, ValueError) as exc:
            result.llama_status = f"failed: {exc}"
    return result


@dataclass
class RagRow:
    prompt: str
    prompt_tokens: int
    plain: Decode | None = None
    spec: Decode | None = None
    peer: PeerDecode | None = None

    @property
    def identical(self) -> bool | None:
        if self.plain is None or self.spec is None:
            return None
        return self.plain.output_ids == self.spec.output_ids


@dataclass
class RagResult:
    rows: list[RagRow]
    spec_status: str = ""  # non-empty: speculation did not run, and why
    peer_status: str = ""


def rag_inputs(sizes: Sizes) -> dict[str, list[int]]:
    """Each prompt as chat messages rendered with the model's template, in token ids."""
    from radixgen.runtime.model.loader import resolve_model
    from radixgen.runtime.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(resolve_model(MODEL))
    names = list(RAG_PROMPTS)[: sizes.rag_prompts]
    out = {}
    for name in names:
        messages = [{"role": "user", "content": RAG_PROMPTS[name]}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        out[name] = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def _radixgen_rag(
    inputs: dict[str, list[int]], sizes: Sizes, options: dict[str, Any]
) -> dict[str, Decode]:
    params = {"max_new_tokens": sizes.rag_tokens, "temperature": 0}
    with Engine(model=MODEL, **options) as engine:
        return {
            name: median_run(radixgen_runs(engine, ids, params, sizes.rounds))
            for name, ids in inputs.items()
        }


def _peer_rag(inputs: dict[str, list[int]], sizes: Sizes, log_dir: Path) -> dict[str, PeerDecode]:
    from radixgen.runtime.model.loader import default_model_path

    spec = peers.llama_server_spec(default_model_path(), 1, key="llamacpp_1slot")
    out = {}
    with running_server(spec, log_dir) as root:
        for name, ids in inputs.items():
            peer_completion(root, ids, sizes.rag_tokens)  # warm-up
            runs = [peer_completion(root, ids, sizes.rag_tokens) for _ in range(sizes.rounds)]
            ranked = sorted(runs, key=lambda p: p.tok_s or 0.0)
            out[name] = ranked[(len(ranked) - 1) // 2]
    return out


def bench_rag(sizes: Sizes, dtype: str, skip_llamacpp: bool) -> RagResult:
    inputs = rag_inputs(sizes)
    rows = {name: RagRow(name, len(ids)) for name, ids in inputs.items()}
    result = RagResult(list(rows.values()))
    log(f"radixgen: extraction/RAG, {len(inputs)} prompts, no speculation")
    for name, d in _radixgen_rag(inputs, sizes, {"dtype": dtype}).items():
        rows[name].plain = d
    if speculation_available():
        log("radixgen: extraction/RAG with n-gram speculation")
        spec = {"dtype": dtype, "speculative_algorithm": "ngram"}
        for name, d in _radixgen_rag(inputs, sizes, spec).items():
            rows[name].spec = d
    else:
        result.spec_status = (
            "skipped: this checkout's EngineConfig has no speculative_algorithm field "
            "(n-gram speculation not built yet)"
        )
    if skip_llamacpp:
        result.peer_status = "skipped (--skip-llamacpp)"
    elif peers.binary("llama-server") is None:
        result.peer_status = f"llama-server not found in {peers.bin_dir()} ({peers.BUILD_HINT})"
    else:
        log("llama-server (1 slot): extraction/RAG")
        try:
            with tempfile.TemporaryDirectory(prefix="bench_decode_") as log_dir:
                for name, p in _peer_rag(inputs, sizes, Path(log_dir)).items():
                    rows[name].peer = p
        except (RuntimeError, OSError, httpx.HTTPError) as exc:
            result.peer_status = f"failed: {str(exc).splitlines()[0] if str(exc) else exc!r}"
    return result


# --- report -----------------------------------------------------------------------------------


def _fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return "—" if x is None else format(x, spec) + suffix


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _verdict(value: float | None, goal: float) -> str:
    if value is None:
        return "not measured"
    return "holds" if value >= goal else "MISSED"


def decode_report(r: DecodeResult, sizes: Sizes, dtype: str, llama_build: str) -> list[str]:
    rounds = lambda xs: ", ".join(f"{x:.1f}" for x in xs)
    llama = _fmt(r.llama_tok_s, ".1f") if not r.llama_status else r.llama_status
    return [
        f"### Batch-1 decode ({sizes.new_tokens} new tokens, greedy, EOS ignored, median of "
        f"{sizes.rounds} rounds)",
        "",
        "| system | tok/s | rounds |",
        "|---|---:|---|",
        f"| radixgen (Engine, dtype {dtype}, streamed) | {_fmt(r.radixgen_tok_s, '.1f')} "
        f"| {rounds(r.radixgen_rounds)} |",
        f"| radixgen, fused decode step off (per-operation passes; rounds interleaved with the "
        f"row above) | {_fmt(r.per_operation_tok_s, '.1f')} | {rounds(r.per_operation_rounds)} |",
        f"| llama.cpp (llama-bench tg{sizes.new_tokens}, -t {peers.THREADS}, {llama_build}) "
        f"| {llama} | {rounds(r.llama_rounds)} |",
        "",
        f"Ratio radixgen/llama.cpp: {_fmt(r.ratio, '.2f', 'x')} (target >= {DECODE_TARGET}x: "
        f"{_verdict(r.ratio, DECODE_TARGET)}). Fused step / per-operation: "
        f"{_fmt(r.fused_ratio, '.2f', 'x')}.",
    ]


def _acceptance(d: Decode | None) -> str:
    if d is None:
        return "—"
    drafted, accepted = d.meta.get("spec_draft_tokens"), d.meta.get("spec_accepted_tokens")
    if not drafted or accepted is None:
        return "—"
    return f"{accepted}/{drafted}"


def _total_rate(decodes: list[Decode | None]) -> float | None:
    if not decodes or any(d is None or not d.decode_s for d in decodes):
        return None
    return sum(d.decode_tokens for d in decodes) / sum(d.decode_s for d in decodes)


def _peer_total(peers_: list[PeerDecode | None]) -> float | None:
    if not peers_ or any(p is None or not p.tok_s for p in peers_):
        return None
    return sum(p.tokens for p in peers_) / sum(p.tokens / p.tok_s for p in peers_)


def rag_report(r: RagResult, sizes: Sizes) -> list[str]:
    lines = [
        f"### Extraction/RAG (answers copy from the prompt; greedy, <= {sizes.rag_tokens} new "
        f"tokens, EOS honoured, median of {sizes.rounds} rounds; decode tok/s)",
        "",
        "| prompt | prompt tokens | output tokens (radixgen / llama) | radixgen "
        "| radixgen + n-gram spec | accepted/drafted | llama-server (1 slot) | spec/llama.cpp "
        "| spec/no spec | same output |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in r.rows:
        plain = row.plain.tok_s if row.plain else None
        spec = row.spec.tok_s if row.spec else None
        peer = row.peer.tok_s if row.peer else None
        same = {None: "—", True: "yes", False: "NO"}[row.identical]
        cells = [
            row.prompt,
            str(row.prompt_tokens),
            " / ".join(str(d.tokens) if d else "—" for d in (row.plain, row.peer)),
            _fmt(plain, ".1f"),
            _fmt(spec, ".1f"),
            _acceptance(row.spec),
            _fmt(peer, ".1f"),
            _fmt(_ratio(spec, peer), ".2f", "x"),
            _fmt(_ratio(spec, plain), ".2f", "x"),
            same,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    plain_t = _total_rate([row.plain for row in r.rows])
    spec_t = _total_rate([row.spec for row in r.rows])
    peer_t = _peer_total([row.peer for row in r.rows])
    total = [
        "**all prompts**",
        "",
        "",
        _fmt(plain_t, ".1f"),
        _fmt(spec_t, ".1f"),
        "",
        _fmt(peer_t, ".1f"),
        _fmt(_ratio(spec_t, peer_t), ".2f", "x"),
        _fmt(_ratio(spec_t, plain_t), ".2f", "x"),
        "",
    ]
    lines += ["| " + " | ".join(total) + " |", ""]
    if r.spec_status:
        lines.append(f"- radixgen + n-gram speculation: {r.spec_status}.")
    if r.peer_status:
        lines.append(f"- llama-server: {r.peer_status}.")
    identical = [row.identical for row in r.rows]
    if None not in identical:
        if all(identical):
            lines.append("- Check: radixgen's outputs with and without speculation are identical.")
        else:
            differ = ", ".join(row.prompt for row in r.rows if not row.identical)
            lines.append(f"- Check FAILED: speculation changed the greedy output of: {differ}.")
    with_spec = _ratio(spec_t, peer_t)
    verdict = _verdict(with_spec, RAG_TARGET)
    if with_spec is not None and not all(x is True for x in identical):
        verdict = "not met: the outputs are not shown identical"
    lines.append(
        f"Ratios: radixgen/llama.cpp without speculation "
        f"{_fmt(_ratio(plain_t, peer_t), '.2f', 'x')}, with n-gram speculation "
        f"{_fmt(with_spec, '.2f', 'x')} (target >= {RAG_TARGET:g}x with the same outputs: "
        f"{verdict})."
    )
    return lines


def report(
    decode: DecodeResult, rag: RagResult | None, sizes: Sizes, dtype: str, llama_build: str
) -> str:
    lines = [f"CPU: {record.machine().describe()}", f"Model: {MODEL} GGUF; radixgen dtype {dtype}"]
    lines += ["", *decode_report(decode, sizes, dtype, llama_build)]
    if rag is not None:
        lines += ["", *rag_report(rag, sizes)]
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="1 round, 32 tokens, 2 prompts: a smoke run"
    )
    p.add_argument("--dtype", default="auto", help="radixgen's dtype (default auto)")
    p.add_argument("--rounds", type=int, help=f"rounds per figure (default {Sizes.rounds})")
    p.add_argument("--new-tokens", type=int, help=f"batch-1 decode (default {Sizes.new_tokens})")
    p.add_argument("--rag-tokens", type=int, help=f"extraction cap (default {Sizes.rag_tokens})")
    p.add_argument("--skip-llamacpp", action="store_true", help="do not run llama.cpp")
    p.add_argument("--skip-rag", action="store_true", help="only the batch-1 decode")
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON here")
    record.add_record_args(p)
    return p.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else Sizes()
    given = {k: getattr(args, k) for k in ("rounds", "new_tokens", "rag_tokens")}
    sizes = dataclasses.replace(sizes, **{k: v for k, v in given.items() if v is not None})
    if min(sizes.rounds, sizes.new_tokens, sizes.rag_tokens) < 1:
        raise SystemExit("--rounds, --new-tokens and --rag-tokens must be >= 1")
    return sizes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sizes_from(args)
    command = record.command_line("python benchmarks/bench_decode.py", argv)
    dtype = record.dtype_label(args.dtype)
    llama_build = peers.version() or "version unknown"
    decode = bench_batch1(sizes, args.dtype, args.skip_llamacpp)
    rag = None if args.skip_rag else bench_rag(sizes, args.dtype, args.skip_llamacpp)
    text = report(decode, rag, sizes, dtype, llama_build)
    print(text)
    title = "Decode benchmark" + (", --quick smoke run" * args.quick)
    settings = {"Model": MODEL, "dtype": dtype, "llama.cpp": llama_build}
    record.save(args, "decode", title, text, command, settings)
    if args.json:
        payload = {
            "sizes": dataclasses.asdict(sizes),
            "decode": dataclasses.asdict(decode),
            "rag": None if rag is None else dataclasses.asdict(rag),
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
