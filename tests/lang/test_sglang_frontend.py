"""The unmodified SGLang frontend (`sglang` 0.5.23 `RuntimeEndpoint`) against `radixgen serve`.

Every program in tests/lang/sglang_programs.py is written once against SGLang's API and run by
both frontends on the session's language server (tests/lang/conftest.py `lang_server_url`):
the real `sglang` in its own interpreter (`import sglang` patches transformers and sets cache
variables process-wide, which must not leak into this session's in-process engine), and
`radixgen` here, through `runtime_backend`. All programs are greedy (temperature 0), so the two
must agree exactly: variables, program text, messages, stream chunks and select scores.

Install. `sglang`'s wheel requires the whole GPU serving stack (torch 2.14, flashinfer, CUDA
kernels, ...), so scripts/install.sh installs it with `--no-deps` when the extras include `test`,
and the `test` extra lists what `import sglang` and its frontend need beyond radixgen's own
dependencies (found by importing in radixgen's venv until nothing was missing):

    triton     sglang/srt/utils/common.py imports it unconditionally (via `import sglang`)
    pillow     same module (`from PIL import Image`)
    pybase64   same module, and sglang/utils.py
    orjson     same module
    msgspec    sglang/srt/platforms (and RuntimeEndpoint)
    pyzmq      sglang/srt/utils/network.py
    ipython    sglang/utils.py (`from IPython.display import HTML`)
    aiohttp    sglang/lang/backend/runtime_endpoint.py

(numpy, requests, psutil, packaging, pydantic, tqdm, torch and transformers already come with
radixgen or its test extra.) The wheel exists for CPython 3.11 and 3.12 only.

Known upstream limits, kept visible here rather than papered over on the server:
- `greedy_token_selection` and `unconditional_likelihood_normalized` fail inside SGLang 0.5.23's
  own frontend against SGLang's runtime semantics, which radixgen's server reproduces: the first
  prompt-logprob entry of every span is None (the greedy method takes np.mean over it), and the
  unconditional request sends no `logprob_start_len`, so the runtime returns no prompt logprobs
  (the method indexes [0] of an empty list). Those tests xfail on exactly these errors; a
  wrapper that counts None as 0.0 shows SGLang's greedy algorithm then agrees with radixgen's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import radixgen
from tests.lang.sglang_programs import JSON_REGEX, SELECT_CHOICES, STOP_REGEX, run_program

SGLANG_VERSION = "0.5.23"
ROOT = Path(__file__).resolve().parents[2]
PROGRAM_TIMEOUT = 900  # the whole sglang run; generous for a loaded 2-core machine
UPSTREAM_SELECT_ERRORS = {
    "greedy_token_selection": "TypeError: unsupported operand type(s) for +: 'NoneType'",
    "unconditional_likelihood_normalized": "IndexError: index 0 is out of bounds",
}


@pytest.fixture(scope="module")
def sglang_results(lang_server_url, tmp_path_factory) -> dict:
    """Every program's result under the real `sglang` frontend (one subprocess, in order)."""
    out = tmp_path_factory.mktemp("sglang") / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.lang.sglang_programs", lang_server_url, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PROGRAM_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["version"] == SGLANG_VERSION
    return data["results"]


@pytest.fixture
def both(sglang_results, runtime_backend):
    """(sglang's result, radixgen's result) for a program name."""

    def run(name: str) -> tuple[dict, dict]:
        return sglang_results[name], run_program(radixgen, runtime_backend, name)

    return run


def ok(result: dict) -> dict:
    assert "error" not in result, result["error"]
    return result


def assert_same(sg, rg, path: str = "result") -> None:
    """Equal, except that logprobs (floats) may differ by float rounding: one frontend's run
    finds the prompt cold in the radix cache, the other's warm."""
    if isinstance(sg, float) or isinstance(rg, float):
        assert sg == pytest.approx(rg, abs=1e-4), path
    elif isinstance(sg, dict) and isinstance(rg, dict):
        assert sg.keys() == rg.keys(), path
        for key in sg:
            assert_same(sg[key], rg[key], f"{path}[{key!r}]")
    elif isinstance(sg, list) and isinstance(rg, list):
        assert len(sg) == len(rg), path
        for i, (a, b) in enumerate(zip(sg, rg, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    else:
        assert sg == rg, path


def test_the_pinned_sglang_release_is_installed():
    assert metadata.version("sglang") == SGLANG_VERSION


def test_multi_turn_roles(both):
    sg, rg = both("multi_turn")
    assert_same(ok(sg), ok(rg))
    roles = [m["role"] for m in sg["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert sg["messages"][2]["content"] == sg["vars"]["first"]
    assert sg["text"].startswith("<|im_start|>system\nAnswer in one short sentence.<|im_end|>\n")
    assert all(v for v in sg["vars"].values())


def test_gen_stop_strings(both):
    sg, rg = both("stop_strings")
    assert_same(ok(sg), ok(rg))
    assert sg["vars"]["one_stop"] and "," not in sg["vars"]["one_stop"]
    assert sg["finish"]["one_stop"] == {"type": "stop", "matched": ","}
    assert sg["finish"]["two_stops"]["matched"] in ("g", " f")
    assert not sg["vars"]["two_stops"].endswith(sg["finish"]["two_stops"]["matched"])


def test_select_token_length_normalized(both):
    sg, rg = both("select_token_length_normalized")
    assert_same(ok(sg), ok(rg))
    assert sg["vars"]["answer"] in SELECT_CHOICES
    scores = sg["meta"]["answer"]["normalized_prompt_logprobs"]
    assert SELECT_CHOICES[scores.index(max(scores))] == sg["vars"]["answer"]


@pytest.mark.parametrize("method", sorted(UPSTREAM_SELECT_ERRORS))
def test_select_other_choices_methods(both, method):
    sg, rg = both(f"select_{method}")
    ok(rg)
    if sg.get("error", "").startswith(UPSTREAM_SELECT_ERRORS[method]):
        pytest.xfail(f"SGLang {SGLANG_VERSION}'s own {method} fails on SGLang runtime output")
    assert_same(ok(sg), rg)


def test_sglang_greedy_algorithm_agrees_when_none_counts_as_zero(both, sglang_results):
    """The server's spans fed to SGLang's GreedyTokenSelection (None -> 0.0) decide as
    radixgen's greedy method, with the same logprob matrix."""
    sg = ok(sglang_results["select_greedy_none_as_zero"])
    _, rg = both("select_greedy_token_selection")
    assert sg["vars"] == ok(rg)["vars"]
    for var in ("answer", "again"):
        matrix = sg["meta"][var]["greedy_logprob_matrix"]
        assert_same(matrix, rg["meta"][var]["greedy_logprob_matrix"])


def test_fork_and_join(both):
    sg, rg = both("fork_join")
    assert_same(ok(sg), ok(rg))
    items = sg["vars"]["item"]
    assert isinstance(items, list) and len(items) == 2 and all(items)
    assert sg["text"] == "Two lists of fruits.\nDone."  # gather_variable leaves the text alone


def test_regex_and_int_gens(both):
    sg, rg = both("constrained")
    assert_same(ok(sg), ok(rg))
    assert re.fullmatch(r"19[0-9]{2}", sg["vars"]["year"])
    int(sg["vars"]["age"])
    int(sg["vars"]["days"])


def test_json_by_regex_and_schema(both):
    sg, rg = both("json_output")
    assert_same(ok(sg), ok(rg))
    assert re.fullmatch(JSON_REGEX, sg["vars"]["person"])
    assert set(json.loads(sg["vars"]["person"])) == {"name", "age"}
    assert set(json.loads(sg["vars"]["city"])) == {"city"}


def test_streaming_text_iter(both):
    sg, rg = both("streaming")
    assert_same(ok(sg), ok(rg))
    assert len(sg["var_chunks"]) > 1
    assert "".join(sg["chunks"]) == sg["text"]
    assert "".join(sg["var_chunks"]) == sg["var_value"] == sg["vars"]["rest"]


def test_run_batch(both):
    sg, rg = both("batch")
    assert_same(sg, rg)
    assert len(sg["batch"]) == 3
    assert all(ok(r)["vars"]["answer"] for r in sg["batch"])


def test_gen_logprobs_pass_through(both):
    sg, rg = both("logprobs")
    assert_same(ok(sg), ok(rg))
    meta = sg["meta"]
    assert meta["completion_tokens"] == len(meta["output_token_logprobs"]) == 4
    assert "".join(e[2] for e in meta["output_token_logprobs"]) == sg["vars"]["city"]
    assert all(len(top) == 2 for top in meta["output_top_logprobs"])


def test_get_server_info(both):
    sg, rg = both("server_info")
    assert_same(ok(sg), ok(rg))
    assert "max_running_requests" in sg["keys"]


def test_gen_stop_regex(both):
    sg, rg = both("stop_regex")
    assert_same(ok(sg), ok(rg))
    assert sg["finish"]["rest"] == {"type": "stop", "matched": STOP_REGEX}
    assert "five" not in sg["vars"]["rest"]  # stopped at " four" (unconstrained: " four, five")
