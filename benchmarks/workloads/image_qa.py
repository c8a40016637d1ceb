"""Image QA, shaped like the paper's LLaVA workload (llava-bench): one image, several questions
about it, each question a separate program call (`sgl.image` + question + one `gen`).

What it measures is the radix cache on image prompts: each image becomes `tokens_per_image`
placeholder tokens keyed by its content hash, so the second and later questions about an image
should reuse the image's KV. Reported per system (cache on, cache off): the hit rate
(cached / prompt tokens, from the engine's counters), the offline optimum for the same requests
in the same order (a trie over their token ids, as metrics.py), programs per second, and how
often the vision encoder ran.

No LLaVA checkpoint ships with radixgen. `--model DIR` takes a llava-hf directory (e.g.
llava-hf/llava-1.5-7b-hf, downloaded by you); without it the run writes a small random-weight
LLaVA with transformers' classes whose images take 576 tokens as LLaVA-1.5's do. With random
weights the answers are meaningless: only the cache and timing figures mean anything.

    python -m benchmarks.workloads.image_qa [--model DIR] [--images 4] [--questions 5]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import radixgen as sgl
from benchmarks.workloads.metrics import optimal_hit_rate
from benchmarks.workloads.recording import TokenizedRequest

QUESTIONS = [
    "What is shown in this image?",
    "Describe the colours in the picture.",
    "How many objects can you count?",
    "Is this photo taken indoors or outdoors?",
    "What is unusual about this image?",
    "Write a one-line caption for it.",
    "What would you name this picture?",
    "Which part of the image draws the eye first?",
]
MAX_TOKENS = 16
NOTE = "random weights: the answers are meaningless; only cache and timing figures count"


@sgl.function
def image_qa(s, image, question):
    s += "USER: " + sgl.image(image) + "\n" + question + " ASSISTANT:"
    s += sgl.gen("answer", max_tokens=MAX_TOKENS)


def picture(seed: int, size: tuple[int, int] = (400, 300)) -> str:
    """A seeded random picture as base64 PNG."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def make_args(images: int, questions: int) -> list[dict[str, Any]]:
    """Image-major order (the paper's: each image's questions together)."""
    return [
        {"image": picture(i), "question": QUESTIONS[q % len(QUESTIONS)]}
        for i in range(images)
        for q in range(questions)
    ]


def write_random_llava(path: Path) -> Path:
    """A random-weight LLaVA-1.5-shaped directory (CLIP 336/14: 576 tokens per image; a small
    Llama) with a BPE tokenizer that has `<image>`, written with transformers' own classes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        PreTrainedTokenizerFast,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["</s>", "<image>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(QUESTIONS * 8 + ["USER: ASSISTANT:"] * 8, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>")
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=2048,
        bos_token_id=0,
        eos_token_id=0,
    )
    vision = CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=336,
        patch_size=14,
    )
    config = LlavaConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    LlavaForConditionalGeneration(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def _prompt_ids(engine: sgl.Engine, args: dict[str, Any]) -> list[int]:
    """The token ids (image placeholders included) the engine prefills for one program."""
    text = "USER: <image>\n" + args["question"] + " ASSISTANT:"
    ids = engine.tokenizer(text)["input_ids"]
    return engine.images.expand(ids, engine.images.load([args["image"]]))[0]


def run_system(model: str, batch: list[dict[str, Any]], cache: bool, parallel: int) -> dict:
    engine = sgl.Engine(model=model, disable_radix_cache=not cache, kv_cache_tokens=32768)
    try:
        warm = {"image": picture(10_000), "question": QUESTIONS[0]}  # not one of the batch's
        image_qa.run(backend=engine, temperature=0, **warm).sync()  # warm-up, then cold cache
        if not engine.flush_cache():
            raise RuntimeError("the cache could not be flushed after the warm-up")
        before = engine.stats()
        start = time.perf_counter()
        states = image_qa.run_batch(batch, backend=engine, temperature=0, num_threads=parallel)
        for state in states:
            state.sync()
        wall = time.perf_counter() - start
        after = engine.stats()
        failed = sum(1 for s in states if s.error() is not None)
        prompt = after["prompt_tokens"] - before["prompt_tokens"]
        cached = after["cached_tokens"] - before["cached_tokens"]
        # Outputs are never re-sent in this workload: the optimum needs only the prompts.
        optimum = optimal_hit_rate(
            TokenizedRequest(_prompt_ids(engine, a), [], None) for a in batch
        )
        return {
            "system": "radixgen" if cache else "radixgen, cache off",
            "programs": len(batch),
            "failed": failed,
            "wall_s": round(wall, 3),
            "programs_per_s": round(len(batch) / wall, 3),
            "prompt_tokens": prompt,
            "hit_rate": round(cached / prompt, 4) if prompt else 0.0,
            "optimal_hit_rate": round(optimum.bounded, 4),
            "vision_encoder_runs": after["vision_encoded_images"] - before["vision_encoded_images"],
        }
    finally:
        engine.shutdown()


def markdown(rows: list[dict], shape: str, model: str) -> str:
    lines = [
        f"# Image QA ({shape}; model: {model})",
        "",
        f"**Note: {NOTE}.**" if "random" in model else "",
        "",
        "| system | programs/s | hit rate | optimal | of optimal | encoder runs |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        share = r["hit_rate"] / r["optimal_hit_rate"] if r["optimal_hit_rate"] else 0.0
        lines.append(
            f"| {r['system']} | {r['programs_per_s']:.2f} | {r['hit_rate']:.1%} | "
            f"{r['optimal_hit_rate']:.1%} | {share:.0%} | {r['vision_encoder_runs']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a llava-hf directory (default: a random tiny LLaVA)")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--out", type=Path, help="write the results JSON and Markdown here")
    args = parser.parse_args(argv)
    batch = make_args(args.images, args.questions)
    shape = f"{args.images} images x {args.questions} questions, {MAX_TOKENS} tokens each"
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(write_random_llava(Path(tmp)))
        label = args.model or "random-weight LLaVA-1.5-shaped (576 tokens per image)"
        rows = [run_system(model, batch, cache, args.parallel) for cache in (True, False)]
    report = markdown(rows, shape, label)
    print(report)
    if args.out is not None:
        args.out.with_suffix(".json").write_text(
            json.dumps({"shape": shape, "model": label, "note": NOTE, "rows": rows}, indent=2)
        )
        args.out.with_suffix(".md").write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
