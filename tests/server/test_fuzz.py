"""Property-based fuzz of the server's own OpenAPI schema: no request it admits may produce a
5xx or hang. Requests come from schemathesis' hypothesis strategies (driven directly: its
pytest plugin does not support this pytest). The fuzzed server has a 64-token context, so
every generation is short."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.server.conftest import running_server

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


@pytest.fixture(scope="module")
def api_schema():
    with running_server(FUZZ_ARGS) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


def test_no_server_error_and_no_hang(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10  # every route of the app is fuzzed

    for operation in operations:

        @settings(
            max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=operation.as_strategy())
        def check(case):
            response = case.call(timeout=60)
            assert response.status_code < 500, (case.method, case.path, response.text[:300])

        check()
