"""The viewer's local view ledger: views used and the newest signed rights seen, per image.

The views-used counter inside an image is written by the viewer's own client,
so a viewer can always put an older copy of the file back. The ledger is the
second record that defeats this: the views left are the signed grant minus
the *larger* of the image's counter and the ledger's, and the ledger keeps the
highest rights version (and its signed blob) seen for each image, so rights
from an older copy never replace newer ones.

Storage: one JSON file (``{"format": 1, "images": {image_id: {"views_used",
"rights_version", "rights"}}}``, rights as base64 of the signed blob), replaced
atomically (temporary file, fsync, rename, fsync of the directory) on every
change. Read-modify-write runs under a thread lock and an ``flock`` on a
sidecar ``.lock`` file, so concurrent views (threads or processes) never lose
an update. A damaged ledger raises ``LedgerError`` and is never overwritten.

All methods block (file I/O): call them off the reactor thread.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs

from cloudp2p.encryption.errors import LedgerError
from cloudp2p.files import atomic_write

_FORMAT = 1
_MAX_LEDGER = 64 * 1024 * 1024


@attrs.frozen
class LedgerEntry:
    views_used: int = 0
    rights_version: int = -1  # -1: no rights recorded yet
    rights: bytes | None = None  # the signed rights blob of ``rights_version``


class Ledger:
    """A view ledger file. ``path`` need not exist yet; its directory must."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()

    def get(self, image_id: str) -> LedgerEntry:
        with self._locked():
            return self._read().get(image_id, LedgerEntry())

    def entries(self) -> dict[str, LedgerEntry]:
        with self._locked():
            return self._read()

    def update(self, image_id: str, change: Callable[[LedgerEntry], LedgerEntry]) -> LedgerEntry:
        """Atomically replace the entry with ``change(entry)``.

        The ledger only moves forward: the stored views-used is the larger of
        the old and new values and the rights are replaced only by a higher
        version, whatever ``change`` returns. Exceptions from ``change`` leave
        the file as it was.
        """
        with self._locked():
            entries = self._read()
            old = entries.get(image_id, LedgerEntry())
            new = change(old)
            merged = LedgerEntry(
                views_used=max(old.views_used, new.views_used),
                rights_version=max(old.rights_version, new.rights_version),
                rights=new.rights if new.rights_version > old.rights_version else old.rights,
            )
            if merged != old:
                entries[image_id] = merged
                self._write(entries)
            return merged

    # -- storage ------------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            try:
                fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as e:
                raise LedgerError(f"{self.path}.lock: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock

    def _read(self) -> dict[str, LedgerEntry]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(_MAX_LEDGER + 1)
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise LedgerError(f"{self.path}: cannot read: {e.strerror}") from None
        if len(raw) > _MAX_LEDGER:
            raise LedgerError(f"{self.path}: larger than {_MAX_LEDGER} bytes")
        try:
            doc = json.loads(raw)
            return _parse(doc)
        except (ValueError, UnicodeDecodeError, TypeError, KeyError, binascii.Error) as e:
            raise LedgerError(f"{self.path}: damaged ({e})") from None

    def _write(self, entries: dict[str, LedgerEntry]) -> None:
        doc = {
            "format": _FORMAT,
            "images": {
                image_id: {
                    "views_used": e.views_used,
                    "rights_version": e.rights_version,
                    "rights": None if e.rights is None else base64.b64encode(e.rights).decode("ascii"),
                }
                for image_id, e in sorted(entries.items())
            },
        }
        try:
            atomic_write(self.path, json.dumps(doc, indent=1).encode("ascii") + b"\n", mode=0o600)
        except OSError as e:
            raise LedgerError(f"{self.path}: cannot write: {e.strerror}") from None


def _parse(doc: Any) -> dict[str, LedgerEntry]:
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or not isinstance(doc.get("images"), dict):
        raise ValueError(f"expected a format {_FORMAT} ledger")
    out = {}
    for image_id, e in doc["images"].items():
        if not isinstance(e, dict):
            raise ValueError(f"entry {image_id!r} is not a table")
        used, version, rights = e["views_used"], e["rights_version"], e["rights"]
        if type(used) is not int or used < 0 or type(version) is not int or version < -1:
            raise ValueError(f"entry {image_id!r} has bad counts")
        if rights is not None and not isinstance(rights, str):
            raise ValueError(f"entry {image_id!r} has bad rights")
        blob = None if rights is None else base64.b64decode(rights.encode("ascii"), validate=True)
        out[image_id] = LedgerEntry(views_used=used, rights_version=version, rights=blob)
    return out
