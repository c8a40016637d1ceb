"""Property-based fuzz of the server's own OpenAPI schema: no request it admits may produce a
5xx or hang. Requests come from schemathesis' hypothesis strategies (driven directly: its
pytest plugin does not support this pytest). The fuzzed server has a 64-token context, so
every generation is short."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from radixgen.launcher import running_server

# "auto": the dtype this CPU multiplies fastest. A fuzzed chat request may ask for n = 123
# completions; on an AVX2-only CPU bfloat16 matmuls fall back to a generic loop and that one
# request took 72 s (float32: 13 s), past the 60 s hang limit.
FUZZ_ARGS = [
    "--dtype",
    "auto",
    "--context-length",
    "64",
    "--kv-cache-tokens",
    "8192",
    "--log-level",
    "error",
]
NESTED = "#/components/schemas/SamplingParams"


@pytest.fixture(scope="module")
def fuzz_url():
    with running_server(FUZZ_ARGS) as server:
        yield server.url


@pytest.fixture(scope="module")
def api_spec(fuzz_url) -> dict[str, Any]:
    return httpx.get(f"{fuzz_url}/openapi.json", timeout=30).json()


def _fuzz(operation, base_url: str, mode=schemathesis.GenerationMode.POSITIVE, examples=12):
    @settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        response = case.call(base_url=base_url, timeout=60)
        assert response.status_code < 500, (case.method, case.path, response.text[:300])

    check()


def test_no_server_error_and_no_hang(api_spec, fuzz_url):
    schema = schemathesis.openapi.from_dict(api_spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10  # every route of the app is fuzzed
    for operation in operations:
        _fuzz(operation, fuzz_url)


def _generate_with_sampling_params(spec: dict[str, Any]) -> dict[str, Any]:
    """The schema of POST /generate alone, its body narrowed so that every example carries a
    prompt and one `sampling_params` object: the nested fields are what gets fuzzed. Bounds
    keep most positive examples servable (so they reach the scheduler) and short."""
    spec = copy.deepcopy(spec)
    spec["paths"] = {"/generate": {"post": spec["paths"]["/generate"]["post"]}}
    schemas = spec["components"]["schemas"]
    body = schemas["GenerateRequest"]
    body["properties"]["text"] = {"type": "string", "minLength": 1, "maxLength": 40}
    body["properties"]["sampling_params"] = {"$ref": NESTED}
    del body["properties"]["input_ids"]
    body["required"] = ["text", "sampling_params"]
    body["additionalProperties"] = False
    schemas["SamplingParams"]["required"] = ["max_new_tokens"]  # the default outgrows 64
    params = schemas["SamplingParams"]["properties"]
    params["max_new_tokens"] = {"type": "integer", "minimum": 0, "maximum": 8}
    params["n"] = {"type": "integer", "minimum": 1, "maximum": 4}
    bias = params["logit_bias"]["anyOf"][0]
    bias["propertyNames"] = {"pattern": "^[0-9]{1,5}$"}
    return spec


def test_generate_nested_sampling_params_no_server_error(api_spec, fuzz_url):
    """/generate's schema describes its nested sampling_params field by field (so the fuzzer
    sees them), and examples that carry them, valid and invalid, get no 5xx."""
    params = api_spec["components"]["schemas"]["SamplingParams"]["properties"]
    assert {"max_new_tokens", "n", "stop", "logit_bias", "json_schema", "regex"} <= set(params)
    nested = api_spec["components"]["schemas"]["GenerateRequest"]["properties"]["sampling_params"]
    assert NESTED in str(nested)

    schema = schemathesis.openapi.from_dict(_generate_with_sampling_params(api_spec))
    (operation,) = [result.ok() for result in schema.get_all_operations()]
    for mode in schemathesis.GenerationMode:
        _fuzz(operation, fuzz_url, mode, examples=25)
