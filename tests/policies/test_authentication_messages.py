"""A request without a token is told so; an unknown token is still called unknown."""

from __future__ import annotations

import pytest

from sandbox.core.errors import AuthenticationError

from .conftest import World


@pytest.mark.parametrize(
    ("token", "rule", "said"),
    [
        ("", "auth.token_missing", "no bearer token was sent"),
        ("sbx_made-up", "auth.token_unknown", "unknown token"),
    ],
)
def test_the_refusal_names_what_is_wrong_and_is_recorded(
    world: World, token: str, rule: str, said: str
) -> None:
    with pytest.raises(AuthenticationError) as raised:
        world.authority.authenticate(token, request_id="r1", client="10.0.0.9")
    assert raised.value.rule == rule and said in raised.value.message
    entry = world.recorder.entries[-1]
    assert (entry["action"], entry["decision"]) == ("auth.authenticate", "deny")
    assert entry["rule"] == rule
    assert entry["actor"] == "anonymous" and entry["client"] == "10.0.0.9"
