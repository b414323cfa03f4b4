"""Bearer secrets (API tokens, enrolment codes): made once, stored only as a SHA-256.

A token may also be made by its holder (``sandbox token redeem``), who sends only its
SHA-256: :func:`fingerprint` is what the holder then reads to the approving
administrator, who types it back (``policies/enrolments.py``).  Only the standard
library is used, so the command line can make and fingerprint a token cheaply.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

__all__ = [
    "DIGEST_SHAPE",
    "SECRET_BYTES",
    "fingerprint",
    "new_secret",
    "same_fingerprint",
    "secret_sha256",
]

SECRET_BYTES = 32
DIGEST_SHAPE = re.compile(r"^[0-9a-f]{64}$")
"""A SHA-256 as sent by a holder: 64 lowercase hexadecimal digits."""


def new_secret(prefix: str) -> str:
    """``prefix`` and 32 random bytes, URL-safe base64 (43 characters)."""
    return prefix + secrets.token_urlsafe(SECRET_BYTES)


def secret_sha256(text: str, shape: re.Pattern[str]) -> str | None:
    """SHA-256 of a secret of the given shape; None for anything that cannot be one."""
    if not shape.match(text or ""):
        return None
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def fingerprint(digest: str) -> str:
    """The fingerprint of a secret's SHA-256: 80 bits in base32, ``XXXX-XXXX-XXXX-XXXX``.

    >>> fingerprint("0" * 64)
    'I23H-P72E-JNXL-JGKK'
    """
    mark = hashlib.sha256(b"sandbox token fingerprint\0" + digest.encode("ascii")).digest()
    text = base64.b32encode(mark[:10]).decode("ascii")
    return "-".join(text[i : i + 4] for i in range(0, 16, 4))


def same_fingerprint(told: str, digest: str) -> bool:
    """Whether ``told`` (as typed: any case, with or without dashes and spaces) is the
    fingerprint of ``digest``."""
    typed = re.sub(r"[\s-]", "", told or "").upper()
    return secrets.compare_digest(typed.encode(), fingerprint(digest).replace("-", "").encode())
