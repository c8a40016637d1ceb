"""Command line: `radixgen generate`, `radixgen serve` (one process, or `--dp N` workers), and
`radixgen cache-tree` (a running server's radix tree as an SVG file).

Engine options are generated from `EngineConfig`'s fields, so their names, defaults, choices and
help text are defined once, in config.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
import typing

from radixgen.runtime.config import EngineConfig


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """One `--option` per EngineConfig field, typed and documented from the dataclass."""
    group = parser.add_argument_group("engine")
    hints = typing.get_type_hints(EngineConfig)
    for f in dataclasses.fields(EngineConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (default: {f.default})"
        if hints[f.name] is bool:  # on by default: --no-<option> turns it off
            action = argparse.BooleanOptionalAction if f.default else "store_true"
            group.add_argument(flag, action=action, default=f.default, help=help_text)
            continue
        if typing.get_origin(hints[f.name]) is tuple:  # repeatable: --tune a=1 --tune b=2
            group.add_argument(flag, action="append", default=[], help=help_text)
            continue
        kind = next(
            (t for t in (int, float) if hints[f.name] is t or t in typing.get_args(hints[f.name])),
            str,
        )
        group.add_argument(
            flag, type=kind, default=f.default, choices=f.metadata.get("choices"), help=help_text
        )


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EngineConfig)})


def _generate(args: argparse.Namespace) -> int:
    from radixgen.runtime.engine import Engine

    started = time.perf_counter()
    engine = Engine(engine_config_from_args(args))
    dtype = str(engine.config.torch_dtype).removeprefix("torch.")
    print(
        f"[radixgen] {engine.source.name} loaded in {time.perf_counter() - started:.1f}s "
        f"({dtype}, {engine.config.kv_cache_tokens} KV tokens)",
        file=sys.stderr,
    )
    try:
        prompt = args.prompt
        if args.chat:
            prompt = engine.apply_chat_template([{"role": "user", "content": args.prompt}])
        params = {
            "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "sampling_seed": args.seed,
        }
        started = time.perf_counter()
        if args.json:
            print(json.dumps(engine.generate(prompt, params), indent=2))
            return 0
        printed = ""
        out = None
        for out in engine.generate(prompt, params, stream=True):
            print(out["text"][len(printed) :], end="", flush=True)
            printed = out["text"]
        print()
        meta = out["meta_info"]
        elapsed = time.perf_counter() - started
        print(
            f"[radixgen] {meta['prompt_tokens']} prompt + {meta['completion_tokens']} generated "
            f"tokens in {elapsed:.2f}s, finish: {meta['finish_reason']}",
            file=sys.stderr,
        )
    finally:
        engine.shutdown()
    return 0


def _option_argv(
    parser: argparse.ArgumentParser, args: argparse.Namespace, skip: set[str]
) -> list[str]:
    """The options in `args` that differ from their defaults, as `parser` would read them."""
    argv: list[str] = []
    for action in parser._actions:  # argparse lists its actions only here
        value = getattr(args, action.dest, action.default)
        if not action.option_strings or action.dest in skip or value == action.default:
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(flag if value else action.option_strings[1])  # --x / --no-x
        elif action.nargs == 0:  # store_true
            argv.append(flag)
        elif action.nargs in ("*", "+"):
            argv += [flag, *map(str, value)]
        elif isinstance(value, list):  # append: one flag per value
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def _serve_scaled(args: argparse.Namespace) -> int:
    """`serve --dp N`: N workers behind SGLang's router (radixgen/deploy.py)."""
    from radixgen.deploy import ScaleOutConfig, run

    if len(args.api_key or ()) > 1:
        print(
            "radixgen serve --dp: give one --api-key (the router checks it and forwards it)",
            file=sys.stderr,
        )
        return 2
    config = ScaleOutConfig(
        dp=args.dp,
        host=args.host,
        port=args.port,
        model=args.model,
        worker_args=tuple(
            _option_argv(args.command_parser, args, {"host", "port", "num_threads", "dp"})
        ),
        num_threads=args.num_threads,
        api_key=(args.api_key or [None])[0],
        drain_timeout=args.drain_timeout,
        router_log_level={"debug": "debug", "error": "error", "critical": "error"}.get(
            args.log_level, "warn"
        ),
    )
    return run(config)


def _serve(args: argparse.Namespace) -> int:
    if args.dp < 1:
        print("radixgen serve: --dp must be at least 1", file=sys.stderr)
        return 2
    if args.dp > 1:
        return _serve_scaled(args)
    import uvicorn

    from radixgen.server.app import create_app
    from radixgen.server.context import EngineHolder, ServerSettings

    limits = {  # unset flags keep ServerSettings' defaults
        name: getattr(args, name)
        for name in ("max_body_bytes", "body_read_timeout")
        if getattr(args, name) is not None
    }
    try:
        settings = ServerSettings(
            engine=engine_config_from_args(args),
            served_model_name=args.served_model_name,
            api_keys=tuple(args.api_key or ()),
            cors_allow_origins=tuple(args.cors_allow_origins),
            dashboard_show_text=args.dashboard_show_text,
            **limits,
        )
    except ValueError as exc:
        print(f"radixgen serve: {exc}", file=sys.stderr)
        return 2
    url = f"http://{args.host}:{args.port}"

    def fail(exc: BaseException) -> None:
        print(f"[radixgen] the model failed to load: {exc}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # stop serving: a supervisor sees the exit

    holder = EngineHolder(
        settings.engine,
        on_ready=lambda: print(f"[radixgen] ready: {url}", flush=True),
        on_failure=fail,
    )
    print(f"[radixgen] loading {args.model}; /health answers 503 until ready", flush=True)
    uvicorn.run(
        create_app(settings, holder),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=args.drain_timeout,
        access_log=False,  # request lines carry no prompt text, but keep logs quiet by default
    )
    return 1 if holder.error is not None else 0


def _cache_tree(args: argparse.Namespace) -> int:
    import httpx

    from radixgen.server.dashboard.tree_svg import render_tree_svg

    limits = {"depth": args.depth, "max_nodes": args.max_nodes, "min_tokens": args.min_tokens}
    params = {name: value for name, value in limits.items() if value is not None}
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    try:
        resp = httpx.get(
            f"{args.url.rstrip('/')}/cache_tree", params=params, headers=headers, timeout=60
        )
    except httpx.HTTPError as exc:
        print(f"radixgen cache-tree: {args.url}: {exc}", file=sys.stderr)
        return 1
    if resp.status_code != 200:
        print(f"radixgen cache-tree: HTTP {resp.status_code}: {resp.text[:300]}", file=sys.stderr)
        return 1
    doc = resp.json()
    svg = render_tree_svg(doc)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
    if args.out == "-":
        sys.stdout.write(svg)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(svg)
        print(
            f"[radixgen] {args.out}: {doc['shown_nodes']} of {doc['nodes']} nodes, "
            f"{doc['tokens']} tokens",
            file=sys.stderr,
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radixgen", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate text for one prompt")
    gen.add_argument("prompt", nargs="?", default="What is the capital of France?")
    gen.add_argument(
        "--chat",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wrap the prompt in the model's chat template (default: on)",
    )
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--json", action="store_true", help="print the full result as JSON")
    add_engine_options(gen)
    gen.set_defaults(handler=_generate)

    serve = commands.add_parser("serve", help="serve the native and OpenAI HTTP APIs")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=30000)
    serve.add_argument(
        "--api-key",
        action="append",
        default=None,
        help="require 'Authorization: Bearer KEY'; repeat for several keys (each its own tenant)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        help="larger request bodies get 413, chunked ones too (default: 8 MiB)",
    )
    serve.add_argument(
        "--body-read-timeout",
        type=float,
        default=None,
        help="seconds a whole request body may take to arrive, else 408 (default: 30)",
    )
    serve.add_argument(
        "--served-model-name",
        default=None,
        help="model id in /v1/models (default: the model's name)",
    )
    serve.add_argument(
        "--drain-timeout",
        type=int,
        default=30,
        help="seconds in-flight requests get to finish on SIGTERM",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--cors-allow-origins",
        nargs="*",
        default=[],
        help="origins allowed by CORS (default: CORS off)",
    )
    serve.add_argument(
        "--dashboard-show-text",
        action="store_true",
        help="let /dashboard and /cache_tree show snippets of cached prompt text (default: token "
        "counts and hashes only; prompts are other users' data)",
    )
    serve.add_argument(
        "--dp",
        "--dp-size",
        type=int,
        default=1,
        help="data parallelism: run N workers behind SGLang's router (cache-aware policy) on "
        "--host/--port, splitting the cores between them; needs radixgen[router] (default: 1)",
    )
    add_engine_options(serve)
    serve.set_defaults(handler=_serve, command_parser=serve)

    tree = commands.add_parser(
        "cache-tree", help="draw a running server's radix tree as an SVG file (/cache_tree)"
    )
    tree.add_argument("--url", default="http://127.0.0.1:30000", help="the server's base URL")
    tree.add_argument("--out", default="tree.svg", help="the SVG file to write (- for stdout)")
    tree.add_argument(
        "--api-key", default=os.environ.get("RADIXGEN_API_KEY"), help="(default: $RADIXGEN_API_KEY)"
    )
    tree.add_argument("--depth", type=int, default=None, help="levels shown (server default: 64)")
    tree.add_argument("--max-nodes", type=int, default=None, help="nodes shown (default: 300)")
    tree.add_argument(
        "--min-tokens", type=int, default=None, help="fold smaller subtrees (default: 1)"
    )
    tree.add_argument("--json", default=None, help="also save the /cache_tree document here")
    tree.set_defaults(handler=_cache_tree)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
