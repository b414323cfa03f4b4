"""UTC timestamps in RFC 3339, the one format Sandbox writes."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["now_rfc3339", "to_rfc3339"]


def to_rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def now_rfc3339() -> str:
    return to_rfc3339(datetime.now(UTC))
