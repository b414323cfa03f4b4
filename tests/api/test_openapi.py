"""The OpenAPI document describes every route, and the server keeps its promises.

schemathesis (4.x) generates requests from the document against a real server, as each
role in turn, a bounded number of examples per operation, and checks that no response is
a server error or differs from the document (status code, content type, headers, schema).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import UNLIMITED, LiveServer, run_schemathesis, served

EXAMPLES = 10  # per operation and role: about 350 requests, 2-8 s per role on 2 cores


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of its own: fuzzing issues tokens, rotates keys and freezes things."""
    with served(tmp_path_factory.mktemp("openapi"), UNLIMITED) as live:
        yield live


def test_every_operation_has_models_and_the_error_shape(fuzzed: LiveServer) -> None:
    spec = httpx.get(f"{fuzzed.url}/openapi.json").json()
    operations = [
        (path, method, op) for path, item in spec["paths"].items() for method, op in item.items()
    ]
    assert len(operations) >= 40
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for path, method, op in operations:
        name = f"{method.upper()} {path}"
        success = [code for code in op["responses"] if code.startswith("2")]
        assert success, name
        assert op["responses"][success[0]].get("content"), f"{name}: response model"
        if path not in ("/health", "/v1/enrol"):  # enrolment: the code is the credential
            assert op.get("security") == [{"token": []}], f"{name}: bearer auth"
            for code in ("401", "403", "422", "429", "500"):
                content = op["responses"][code]["content"]
                assert content["application/json"]["schema"] == error, f"{name} {code}"
        if method in ("post", "put") and path not in ("/v1/uploads",):
            body = op.get("requestBody")
            if body is not None:
                assert "$ref" in body["content"]["application/json"]["schema"], name


@pytest.mark.parametrize("who", ["op-bank", "bureau-health", "auditor", "admin"])
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    fuzzed: LiveServer, who: str, tmp_path: Path
) -> None:
    run_schemathesis(fuzzed, who, examples=EXAMPLES, cwd=tmp_path)
