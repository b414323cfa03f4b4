"""Schemathesis against the OpenAPI document, ten times harder than ``tests/api/test_openapi.py``.

The API test (in ``make test``) sends 10 positive examples per operation and role. This one
(``make test-long`` only: it is marked slow) sends ``EXAMPLES`` per operation and role, in
both modes: *positive* (valid requests: no 5xx, responses as documented) and *negative*
(requests the schema forbids: they must be refused with a documented 4xx in the error
shape, never crash the server).  A non-slow variant would repeat the API test, so there is
none.  The server is this module's own: fuzzing issues tokens, rotates keys, freezes things.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import UNLIMITED, LiveServer, run_schemathesis, served

EXAMPLES = 100  # per operation, role and mode: about 1.5 min each on 2 cores (15 in all)
ROLES = ("op-bank", "op-insurer", "bureau-health", "auditor", "admin")


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with served(tmp_path_factory.mktemp("fuzz-api"), UNLIMITED) as live:
        yield live


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("who", ROLES)
def test_schemathesis_at_depth(fuzzed: LiveServer, who: str, mode: str, tmp_path: Path) -> None:
    """No 5xx and no deviation from the document, for valid and invalid requests alike."""
    run_schemathesis(
        fuzzed,
        who,
        examples=EXAMPLES,
        cwd=tmp_path,
        mode=mode,
        phases="examples,coverage,fuzzing",
        seed=20261201,
        timeout=3600,
    )
