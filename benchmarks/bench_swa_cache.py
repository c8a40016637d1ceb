"""The sliding-window KV cache on Gemma 3: the prefix tokens one KV memory budget caches, with
every layer's KV kept per cached token (before) and with a separate, smaller pool for the
sliding-window layers' KV, freed where no window sees it (after, the hybrid pool).

All engines get the same KV memory (`--kv-mib`). Before, every cached token costs all 18 layers'
K/V; after, a cached token costs its 3 global layers', plus its 15 sliding-window layers' only
while it holds an SWA slot (`--swa-ratios`: SWA slots per slot, one engine each). A cached
document stays usable while its last window keeps its window KV, so the hybrid pool holds more
documents the longer they are. The workload is document QA on real text: `--docs` documents of
`--doc-tokens` tokens (ShareGPT conversations, joined), each asked two questions (round 1), then
a third, newest document first (round 2), whose prefix the cache may still hold.
`--max-running` requests run at once; greedy, `--new-tokens` tokens.

Reported per engine: the pool (slots, SWA slots, bytes), KV bytes per cached token (the pool's
bytes over its slots, and over the tokens the tree holds after round 1), the cacheable prefix
tokens (the pool's slots, and what the tree holds after round 1), round 2's cache hit rate and
time, and how many outputs equal the first engine's (in bfloat16 a prefix reused or recomputed
may round differently; float32 must give the same tokens).

    python benchmarks/bench_swa_cache.py [--kv-mib 224] [--swa-ratios 0.25,0.5] [--docs 8]
        [--doc-tokens 3000] [--max-running 2] [--new-tokens 16] [--dtype auto] [--no-record]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's radixgen first

from benchmarks import record  # noqa: E402
from benchmarks.servers import log  # noqa: E402
from benchmarks.sharegpt import load_conversations  # noqa: E402
from radixgen import Engine  # noqa: E402

MODEL = "gemma3-270m"
QUESTIONS = (
    "\n\nQuestion: what is the first request in the conversation above?\nAnswer:",
    "\n\nQuestion: which languages does the text above use?\nAnswer:",
    "\n\nQuestion: summarise the conversation above in one sentence.\nAnswer:",
)


@dataclass
class Result:
    name: str
    slots: int
    swa_slots: int | None
    pool_bytes: int
    tree_tokens: int  # cached after round 1
    tree_bytes: int  # the KV those tokens hold
    hit_rate: float  # round 2's cached prompt tokens / prompt tokens
    seconds: float  # round 2
    outputs: list[list[int]]


def documents(engine: Engine, count: int, length: int) -> list[list[int]]:
    """`count` documents of `length` token ids: ShareGPT conversations as text, joined."""
    conversations, _ = load_conversations(count * 12, seed=0)
    docs, text = [], ""
    for conv in conversations:
        text += "\n".join(f"User: {t.user}\nAssistant: {t.reply}" for t in conv.turns) + "\n"
        ids = engine.tokenizer(text)["input_ids"]
        if len(ids) >= length:
            docs.append(ids[:length])
            text = ""
            if len(docs) == count:
                return docs
    raise SystemExit(f"only {len(docs)} documents of {length} tokens")


def run(name: str, args, **options) -> Result:
    with Engine(model=MODEL, dtype=args.dtype, **options) as engine:
        pool = engine.scheduler.runner.kv_pool
        docs = documents(engine, args.docs, args.doc_tokens)
        questions = [engine.tokenizer(q, add_special_tokens=False)["input_ids"] for q in QUESTIONS]
        params = {"max_new_tokens": args.new_tokens, "temperature": 0, "ignore_eos": True}
        outputs = []
        rounds = [  # round 1: two questions per document; round 2: a third, newest first
            [doc + q for doc in docs for q in questions[:2]],
            [doc + questions[2] for doc in docs[::-1]],
        ]
        for round_index, prompts in enumerate(rounds):
            stats = engine.stats()
            start = time.perf_counter()
            outs = engine.generate(input_ids=prompts, sampling_params=[params] * len(prompts))
            seconds = time.perf_counter() - start
            outputs += [out["output_ids"] for out in outs]
            after = engine.stats()
            if round_index == 0:
                tree_tokens = after["kv_evictable"]
                live = after.get("swa_cached", tree_tokens)
                tree_bytes = tree_tokens * pool.full_token_bytes + live * pool.swa_token_bytes
        prompt = after["prompt_tokens"] - stats["prompt_tokens"]
        hit_rate = (after["cached_tokens"] - stats["cached_tokens"]) / prompt
    return Result(
        name,
        pool.size,
        pool.swa_size if pool.hybrid else None,
        pool.nbytes,
        tree_tokens,
        tree_bytes,
        hit_rate,
        seconds,
        outputs,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kv-mib", type=int, default=224, help="KV memory of every engine")
    p.add_argument("--swa-ratios", default="0.25,0.5", help="SWA slots / slots, one run each")
    p.add_argument("--docs", type=int, default=8)
    p.add_argument("--doc-tokens", type=int, default=3000)
    p.add_argument("--max-running", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--dtype", default="auto")
    record.add_record_args(p)
    args = p.parse_args(argv)
    command = record.command_line("python benchmarks/bench_swa_cache.py", argv)
    budget = args.kv_mib * 2**20
    with Engine(model=MODEL, dtype=args.dtype, kv_cache_tokens=16) as probe:  # per-token bytes
        pool = probe.scheduler.runner.kv_pool
        full_bytes, swa_bytes = pool.full_token_bytes, pool.swa_token_bytes
        dtype = str(probe.config.torch_dtype).removeprefix("torch.")
    common = {"max_running_requests": args.max_running}
    log(f"before: every layer's KV per slot, {args.kv_mib} MiB")
    before = run(
        "every layer per token",
        args,
        kv_cache_tokens=budget // (full_bytes + swa_bytes),
        disable_hybrid_swa_memory=True,
        **common,
    )
    runs = [before]
    for ratio in (float(r) for r in args.swa_ratios.split(",")):
        log(f"after: the hybrid pool, SWA ratio {ratio}, {args.kv_mib} MiB")
        runs.append(
            run(
                f"hybrid, SWA ratio {ratio}",
                args,
                kv_cache_tokens=int(budget // (full_bytes + ratio * swa_bytes)),
                swa_full_tokens_ratio=ratio,
                **common,
            )
        )
    rows = []
    for r in runs:
        swa = "—" if r.swa_slots is None else f"{r.swa_slots:,}"
        same = sum(a == b for a, b in zip(r.outputs, before.outputs, strict=True))
        rows.append(
            f"| {r.name} | {r.slots:,} ({r.slots / before.slots:.2f}x) | {swa} "
            f"| {r.pool_bytes / 2**20:.1f} | {r.pool_bytes / r.slots:,.0f} "
            f"| {r.tree_bytes / max(r.tree_tokens, 1):,.0f} | {r.tree_tokens:,} "
            f"| {r.hit_rate:.1%} | {r.seconds:.1f} ({r.seconds / before.seconds:.2f}x) "
            f"| {same}/{len(r.outputs)} |"
        )
    lines = [
        f"CPU: {record.machine().describe()}",
        f"Model: {MODEL}, {dtype}; KV per token: {full_bytes:,} B in the 3 global layers, "
        f"{swa_bytes:,} B in the 15 sliding-window layers (window 512).",
        f"Workload: {args.docs} documents of {args.doc_tokens} tokens (ShareGPT text), asked 2 "
        f"questions each (round 1), then a third (round 2, newest document first); "
        f"{args.new_tokens} new tokens, greedy, {args.max_running} running at once.",
        "",
        "| pool | slots (cacheable prefix tokens) | SWA slots | KV MiB | KV B per slot "
        "| KV B per cached token, after round 1 | cached tokens after round 1 "
        "| round 2 hit rate | round 2 s | outputs as before |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    text = "\n".join(lines)
    print(text)
    settings = {"KV MiB": args.kv_mib, "SWA ratios": args.swa_ratios, "docs": args.docs}
    record.save(args, "swa-cache", "Sliding-window KV cache: Gemma 3", text, command, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
