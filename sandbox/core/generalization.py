"""How a quasi-identifier must be coarsened before it may be grouped (``generalize``).

A bureau declares it per column in the classification file: ``{ band = 10 }`` (numbers
in bands of 10), ``{ truncate = "hour" }`` (times to the hour), ``{ prefix = 3 }`` (a
text's first three characters).  It binds every clause of a query (``docs/guard.md``,
"Declared generalisations hold in every clause").  ``exact_only = true`` binds it to
exact releases only (a grant without a privacy budget, every release reviewed): under
a budget the column is used at full detail, where the noise protects each person and
the band adds no guarantee (``docs/classification.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Generalization"]


@dataclass(frozen=True)
class Generalization:
    """How a quasi-identifier must be coarsened before it may be grouped."""

    kind: str  # "band" | "truncate" | "prefix"
    width: float | None = None
    unit: str | None = None
    length: int | None = None
    #: Binds exact (reviewed) releases only; under a privacy budget the column is free.
    exact_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "band":
            out: dict[str, Any] = {"band": self.width}
        elif self.kind == "truncate":
            out = {"truncate": self.unit}
        else:
            out = {"prefix": self.length}
        if self.exact_only:  # in the digest only when declared
            out["exact_only"] = True
        return out

    def describe(self) -> str:
        if self.kind == "band":
            text = f"bands of {self.width:g}"
        elif self.kind == "truncate":
            text = f"truncated to {self.unit}"
        else:
            text = f"first {self.length} characters"
        return text + (" (exact releases only)" if self.exact_only else "")
