"""Bearer secrets (API tokens, enrolment codes): made once, stored only as a SHA-256."""

from __future__ import annotations

import hashlib
import re
import secrets

__all__ = ["SECRET_BYTES", "new_secret", "secret_sha256"]

SECRET_BYTES = 32


def new_secret(prefix: str) -> str:
    """``prefix`` and 32 random bytes, URL-safe base64 (43 characters)."""
    return prefix + secrets.token_urlsafe(SECRET_BYTES)


def secret_sha256(text: str, shape: re.Pattern[str]) -> str | None:
    """SHA-256 of a secret of the given shape; None for anything that cannot be one."""
    if not shape.match(text or ""):
        return None
    return hashlib.sha256(text.encode("ascii")).hexdigest()
