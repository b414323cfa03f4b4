"""The platform's checkpoints and the witness cosignatures collected on them, on disk.

One file per tree size, ``<size, 20 digits>.note``: the checkpoint as the log signed it,
with every witness cosignature line added since.  A checkpoint is signed once per size
and never re-signed with another root (:class:`SplitViewRefused` if asked to).  Writers
take an exclusive ``flock`` on ``.lock`` (several server workers share the directory);
files are replaced atomically.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from audit.checkpoint import parse_checkpoint_text, sign_checkpoint
from audit.cosignature import cosignatures_by
from audit.errors import NotFound, ProofError
from audit.keys import SigningKey
from audit.note import ED25519_COSIGNATURE, Note, Verifier, format_note, parse_note

__all__ = ["CheckpointStore"]


def _name(size: int) -> str:
    return f"{size:020d}.note"


class CheckpointStore:
    def __init__(self, directory: Path, origin: str) -> None:
        self.directory = Path(directory)
        self.origin = origin

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write(self, size: int, note: Note) -> None:
        path = self.directory / _name(size)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(format_note(note))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def get(self, size: int) -> Note | None:
        try:
            return parse_note((self.directory / _name(size)).read_bytes())
        except FileNotFoundError:
            return None

    def sizes(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return sorted(int(p.stem) for p in self.directory.glob("*.note") if p.stem.isdigit())

    def publish(self, key: SigningKey, tree_size: int, root_hash: bytes) -> Note:
        """The checkpoint of this tree, signed now if it was not before (with its cosignatures)."""
        with self._locked():
            stored = self.get(tree_size)
            if stored is not None:
                if parse_checkpoint_text(stored.text).root_hash != root_hash:
                    raise ProofError(
                        f"a checkpoint of size {tree_size} with another root was signed before"
                    )
                return stored
            note = sign_checkpoint(key, self.origin, tree_size, root_hash)
            self._write(tree_size, note)
            return note

    def latest_cosigned(self) -> Note | None:
        """The newest checkpoint that carries at least one cosignature line."""
        for size in reversed(self.sizes()):
            note = self.get(size)
            if note is not None and any(
                len(s.signature) == 72 and s.name != self.origin for s in note.signatures
            ):
                return note
        return None

    def add_cosignature(self, cosigned: Note, witness: Verifier) -> Note:
        """Merge ``witness``'s verified cosignature on one of our checkpoints into the store."""
        if witness.sig_type != ED25519_COSIGNATURE:
            raise ProofError("a witness key must be a cosignature (type 0x04) key")
        size = parse_checkpoint_text(cosigned.text).tree_size
        found, bad = cosignatures_by(cosigned, [witness])
        if bad or not found:
            raise ProofError(
                bad[0] if bad else f"the note carries no cosignature by {witness.name}"
            )
        lines = tuple(s for s in cosigned.signatures if witness.matches(s))
        with self._locked():
            stored = self.get(size)
            if stored is None or stored.text != cosigned.text:
                raise NotFound(f"the platform signed no such checkpoint of size {size}")
            kept = tuple(s for s in stored.signatures if not witness.matches(s))
            merged = Note(stored.text, kept + lines[-1:])
            self._write(size, merged)
            return merged
