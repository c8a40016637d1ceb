"""`serve --dp N` without processes: the workers' command line, threads, the router's options."""

from __future__ import annotations

from radixgen.cli import _option_argv, build_parser
from radixgen.deploy import ScaleOutConfig, link_tokenizer, router_argv

LAUNCHER_ONLY = {"host", "port", "num_threads", "dp"}


def _parse(argv: list[str]):
    return build_parser().parse_args(["serve", *argv])


def test_workers_get_every_serve_option_the_launcher_was_given_except_its_own():
    given = [
        "--dp", "3", "--host", "0.0.0.0", "--port", "9000", "--num-threads", "2",
        "--served-model-name", "m", "--api-key", "k", "--kv-cache-tokens", "4096",
        "--disable-radix-cache", "--cors-allow-origins", "a", "b", "--drain-timeout", "5",
    ]  # fmt: skip
    args = _parse(given)
    worker_argv = _option_argv(args.command_parser, args, LAUNCHER_ONLY)
    assert not {"--dp", "--host", "--port", "--num-threads"} & set(worker_argv)
    again = _parse(worker_argv)
    for name in ("served_model_name", "api_key", "kv_cache_tokens", "disable_radix_cache",
                 "cors_allow_origins", "drain_timeout", "model", "dtype"):  # fmt: skip
        assert getattr(again, name) == getattr(args, name), name
    assert again.dp == 1 and again.port == 30000  # the worker is a plain `serve`


def test_threads_split_the_cores_unless_given():
    config = ScaleOutConfig(dp=2, host="127.0.0.1", port=1, model="smollm2")
    assert config.threads_per_worker(cores=8) == 4
    assert config.threads_per_worker(cores=3) == 1
    assert ScaleOutConfig(dp=4, host="h", port=1, model="m").threads_per_worker(cores=2) == 1
    given = ScaleOutConfig(dp=2, host="h", port=1, model="m", num_threads=3)
    assert given.threads_per_worker(cores=8) == 3


def test_router_runs_cache_aware_over_every_worker_and_forwards_the_key():
    config = ScaleOutConfig(dp=2, host="0.0.0.0", port=8000, model="m", api_key="secret")
    argv = router_argv(config, ["http://127.0.0.1:1", "http://127.0.0.1:2"])
    joined = " ".join(argv)
    assert "--worker-urls http://127.0.0.1:1 http://127.0.0.1:2 " in joined
    assert "--policy cache_aware" in joined and "--host 0.0.0.0 --port 8000" in joined
    assert "--api-key secret" in joined
    assert "--prometheus-host 127.0.0.1" in joined  # never the router's 0.0.0.0:29000


def test_tokenizer_link_refuses_names_that_leave_the_router_directory(tmp_path):
    assert not link_tokenizer("smollm2", "../escape", tmp_path)
    assert not link_tokenizer("smollm2", "/etc/x", tmp_path)
    assert not link_tokenizer("smollm2", "", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_router_policy_is_configurable_for_benchmarks():
    config = ScaleOutConfig(dp=2, host="h", port=1, model="m", policy="round_robin")
    argv = router_argv(config, ["http://127.0.0.1:1"])
    assert argv[argv.index("--policy") + 1] == "round_robin"


def test_an_option_on_by_default_reaches_the_workers_turned_off():
    """Boolean engine options that default to on take `--no-<option>`; workers get it too."""
    args = _parse(["--dp", "2", "--no-enable-mixed-chunk"])
    assert args.enable_mixed_chunk is False
    worker_argv = _option_argv(args.command_parser, args, LAUNCHER_ONLY)
    assert "--no-enable-mixed-chunk" in worker_argv
    assert _parse(worker_argv).enable_mixed_chunk is False
    assert _parse([]).enable_mixed_chunk is True
