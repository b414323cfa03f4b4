"""A posted form read into the API's own request models (the same validation as the API)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from sandbox.api.errors import schema_problems
from sandbox.core.errors import InvalidInput

__all__ = ["as_model", "lines", "optional"]

M = TypeVar("M", bound=BaseModel)


def as_model(model: type[M], data: dict[str, Any]) -> M:
    """``model`` from the form's fields; what pydantic refuses is ``api.schema`` (no values)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(
            f"the form does not match: {schema_problems(exc.errors())}", rule="api.schema"
        ) from None


def lines(text: str | None) -> list[str]:
    """A list field typed as words separated by commas, spaces or new lines."""
    return [w for w in (text or "").replace(",", " ").split() if w]


def optional(text: str | None) -> str | None:
    """An optional field: empty means not given."""
    text = (text or "").strip()
    return text or None
