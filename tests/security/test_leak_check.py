"""The leak check itself: it must find what it is for, or the suite proves nothing."""

from __future__ import annotations

from tests.security.conftest import LeakCheck

VALUES = {
    "P000000042",
    "110101199003071234",
    "王小明",
    "李娜",
    "91110000MA01ABCD2X",
    "华宇000123有限公司",
}


def test_finds_ascii_identifiers_as_tokens() -> None:
    check = LeakCheck.of(VALUES)
    assert check.found('{"rows": [{"p": "P000000042"}]}') == ["P000000042"]
    assert check.found("id 110101199003071234,") == ["110101199003071234"]
    assert check.found("P0000000421") == []  # a longer token is another value


def test_finds_names_inside_cjk_text() -> None:
    check = LeakCheck.of(VALUES)
    assert check.found("患者王小明于") == ["王小明"]
    assert check.found("李娜") == ["李娜"]
    assert check.found("医保结算") == []


def test_values_the_request_contained_are_not_leaks_of_the_response() -> None:
    check = LeakCheck.of(VALUES)
    sql = "SELECT count(*) FROM health.claims WHERE id_number = '110101199003071234'"
    assert check.found(f'{{"sql": "{sql}"}}', request_text=sql) == []
    assert check.found('{"sql": "P000000042"}', request_text=sql) == ["P000000042"]


def test_finds_mixed_script_values_as_substrings() -> None:
    check = LeakCheck.of(VALUES)
    assert check.found('{"name": "华宇000123有限公司"}') == ["华宇000123有限公司"]
    assert check.size == len(VALUES)
