"""The console's words: one catalog per language (``i18n/zh.toml``, ``i18n/en.toml``).

Chinese is the default; ``?lang=en`` (or the ``sbx_lang`` cookie it sets) switches.
A key missing from a catalog shows as the key itself, and a test checks that both
catalogs hold the same keys.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path

__all__ = ["DEFAULT", "LANGUAGES", "catalog", "choose", "translator"]

LANGUAGES = ("zh", "en")
DEFAULT = "zh"
DIRECTORY = Path(__file__).parent / "i18n"


@cache
def catalog(lang: str) -> Mapping[str, str]:
    """The flat ``{key: text}`` catalog of one language."""
    data = tomllib.loads((DIRECTORY / f"{lang}.toml").read_text("utf-8"))
    return {str(k): str(v) for k, v in data.items()}


def choose(asked: str | None, cookie: str | None) -> str:
    """The page's language: asked for in the query, else the cookie's, else Chinese."""
    for lang in (asked, cookie):
        if lang in LANGUAGES:
            return lang
    return DEFAULT


def translator(lang: str) -> Callable[..., str]:
    """``t(key, **fields)``: the text of ``key`` in ``lang``, with ``{field}``s filled in."""
    words = catalog(lang)

    def t(key: str, **fields: object) -> str:
        text = words.get(key, key)
        return text.format(**fields) if fields else text

    return t
