"""Child process for the crash and multi-process tests.

Usage: python appender.py URL KEYS_DIR THREADS COUNT TAG
Appends COUNT entries per thread (forever if COUNT < 0) and prints one line
``seq entry_hash`` per acknowledged append, flushed at once: whatever the parent
has read was acknowledged, so it must survive a SIGKILL.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from audit import AuditTrail, KeyRing


def main() -> None:
    url, keys, threads, count, tag = sys.argv[1:6]
    trail = AuditTrail.open(url, KeyRing(Path(keys)), sign_every_n=50, sign_every_s=0.2)
    lock = threading.Lock()

    def work(thread: int) -> None:
        i = 0
        while int(count) < 0 or i < int(count):
            receipt = trail.append(
                actor=f"{tag}-{thread}",
                role="operator",
                action="query",
                target=f"job:{tag}-{thread}-{i}",
                decision="allow",
                rule="grant.live",
                details={"i": i},
            )
            with lock:
                sys.stdout.write(f"{receipt.seq} {receipt.entry_hash.hex()}\n")
                sys.stdout.flush()
            i += 1

    workers = [threading.Thread(target=work, args=(t,)) for t in range(int(threads))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    trail.close()


if __name__ == "__main__":
    main()
