"""Request ids: 32 hex digits, like ``uuid4().hex``, without a system call per request.

``uuid.uuid4`` reads ``os.urandom``, a system call that gives up the GIL: on the event
loop of a busy server the loop then waits for the GIL again (measured: a third of a
millisecond per request, under the load of ``bench/http_load.py``).  A request id needs
to be unique, not secret (it is echoed in ``X-Request-ID`` and recorded in the audit
trail), so a generator seeded once per process from ``os.urandom`` is enough.
"""

from __future__ import annotations

import random
import uuid

__all__ = ["new_request_id"]

_IDS = random.Random(uuid.uuid4().int)  # seeded from os.urandom once per process


def new_request_id() -> str:
    """A fresh request id: a version-4 UUID's 32 hex digits."""
    return uuid.UUID(int=_IDS.getrandbits(128), version=4).hex
