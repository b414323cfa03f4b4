"""The shared fixtures hold what they promise: a copied deployment is a home of its own."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import _deployment_template, build_deployment


def test_the_template_home_names_no_path_of_its_own() -> None:
    template, _tokens = _deployment_template()
    needle = str(template.parent).encode()
    named = [
        path.relative_to(template)
        for path in template.rglob("*")
        if path.is_file() and needle in path.read_bytes()
    ]
    assert named == []


def test_copies_answer_on_their_own_and_do_not_share_changes(tmp_path: Path) -> None:
    from policies import Administration
    from policies.grant_terms import GrantStatus

    first, tokens = build_deployment(tmp_path / "one" / "home")
    second, same_tokens = build_deployment(tmp_path / "two" / "home")
    try:
        assert tokens == same_tokens
        assert {r.id for r in first.catalog.list()} == {r.id for r in second.catalog.list()}
        bureau = first.authority.authenticate(tokens["bureau-health"])
        admin = Administration(first.authority, k_floor=first.settings.k_floor)
        grants = admin.list_grants(bureau)
        assert grants
        admin.revoke_grant(bureau, grants[0].id, reason="only in the first copy")
        other = Administration(second.authority, k_floor=second.settings.k_floor)
        again = other.list_grants(second.authority.authenticate(tokens["bureau-health"]))
        assert {g.id: g.status for g in admin.list_grants(bureau)}[
            grants[0].id
        ] is GrantStatus.REVOKED
        assert {g.id: g.status for g in again}[grants[0].id] is GrantStatus.ACTIVE
        assert first.audit.verify().ok and second.audit.verify().ok
    finally:
        first.close()
        second.close()
