"""Small things several stories share: finding a record by id or name, waiting, background sends."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Coroutine
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from cloudp2p.client import errors as cerr
from cloudp2p.client.state import State

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
FORMATS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "BMP": "bmp", "WEBP": "webp", "TIFF": "tif"}

log = Logger()


def find(state: State, section: str, ref: str, what: str) -> tuple[str, dict[str, Any]]:
    """(id, record) of ``section`` named ``ref``: its id, its name, or (4+ characters) an id prefix."""
    record = state.get(section, ref)
    if record is not None:
        return ref, record
    matches = [(k, r) for k, r in state.items(section) if r.get("name") == ref or k.startswith(ref)]
    if len(ref) < 4:
        matches = [(k, r) for k, r in matches if r.get("name") == ref]
    if not matches:
        raise cerr.UnknownImage(f"({ref!r} is not among {what})")
    if len(matches) > 1:
        ids = ", ".join(k for k, _ in matches)
        raise cerr.UnknownImage(f"({ref!r} matches several of {what}: {ids}; give the id)")
    return matches[0]


async def sleep(reactor: Any, seconds: float) -> None:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    await d


def background(coro: Coroutine[Any, Any, Any]) -> None:
    """Send a message without waiting: a failure is logged (the other side learns it later)."""
    d = defer.Deferred.fromCoroutine(coro)
    d.addErrback(lambda f: log.info("background message not sent: {why}", why=f.getErrorMessage()))


def safe_stem(name: str) -> str:
    stem = os.path.splitext(os.path.basename(name))[0]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "image"
    return stem[:60]


def image_format(data: bytes) -> str:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return FORMATS.get(im.format or "", "img")
    except Exception:
        return "img"



def owned(state: State, ref: str) -> tuple[str, dict[str, Any]]:
    """(id, record) of one of the user's own images."""
    return find(state, "images", ref, "your images")


def viewer_of(session: Any, owner_id: str, owner_ed25519: bytes) -> Any:
    """This user as the viewer of ``owner_id``'s images (their key from the directory), with the ledger."""
    from cloudp2p.encryption.container import Viewer
    from cloudp2p.encryption.ledger import Ledger

    assert session.identity is not None
    ledger = Ledger(session.home.sub("ledger") / "ledger.json")
    return Viewer(session.identity.x25519_private, session.user_id, owner_id, owner_ed25519, ledger)
