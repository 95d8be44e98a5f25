"""Key shares of enforced copies: the cloud's half of a viewer's content key, released once per view.

An owner who grants a copy in *enforced* mode splits the content key in two
(``cloudp2p.encryption.format.split_key``): the copy carries share A wrapped to
the viewer, and share B comes here, sealed by the owner for the viewer's
registered X25519 key (``keywrap.seal_share``), with the view limit for
``(image, viewer)``. The cloud stores the sealed bytes, counts views and hands
them back only while views remain; it cannot open them, and neither share
alone opens the image.

Operations (all through the router; the mutating ones journaled, so a request
that runs on two servers, or again after a ``kill -9``, has one effect and one
answer):

- ``share_put`` (owner): store or replace the sealed share and the limit;
- ``share_limit`` (owner): change the limit (``set-views``, ``more-views``);
  0 revokes and *deletes* the share, for good: that copy can never be opened;
- ``share_view`` (viewer): count one view and release the sealed share, or
  ``no_views_left`` / ``share_revoked`` / ``share_not_found`` and count nothing.

Rows: one per ``(image_id, viewer_id)``; ``share`` is empty once revoked (a
tombstone, so that an older ``version`` can never bring it back). ``views`` is
the total allowed, ``used`` the views released, ``version`` the owner's rights
version of the latest change (a change must carry a higher one).
"""

from __future__ import annotations

import base64
from typing import Any

from cloudp2p.directory import validate as v
from cloudp2p.directory.db import Tx
from cloudp2p.directory.store import Store, token_hash
from cloudp2p.ops import Handler, JSONDict, OpError, RequestContext

SEALED_SHARE_SIZE = 92  # keywrap.SEALED_SIZE: ephemeral key 32, nonce 12, share 32, tag 16
MAX_VIEWS = 1000  # as the client's rights
MAX_VERSION = 2**31 - 1


def _not_found() -> OpError:
    return OpError("share_not_found", "the cloud holds no key share of this image for you")


def _revoked() -> OpError:
    return OpError("share_revoked", "the owner revoked this copy; its key share is destroyed")


def _state(row: tuple) -> dict[str, Any]:
    views, used, version, share = int(row[0]), int(row[1]), int(row[2]), bytes(row[3] or b"")
    return {
        "views": views,
        "used": used,
        "views_left": max(0, views - used) if share else 0,
        "version": version,
        "revoked": not share,
    }


async def put(
    store: Store,
    request_id: str | None,
    token: str,
    image_id: str,
    viewer_id: str,
    share: bytes,
    views: int,
    version: int,
) -> dict:
    """Store the sealed share and the limit; a newer version replaces an older row (views used stay)."""
    await store._wait_ready()
    th, now = token_hash(token), store._now()

    def work(tx: Tx) -> dict:
        owner = store._session(tx, th, now)
        if tx.one("SELECT id FROM users WHERE id = ?", (viewer_id,)) is None:
            raise OpError("user_not_found", "no user has that id")
        row = tx.one(
            "SELECT owner_id, version FROM shares WHERE image_id = ? AND viewer_id = ?"
            + tx.dialect.for_update,
            (image_id, viewer_id),
        )
        if row is None:
            tx.execute(
                "INSERT INTO shares (image_id, viewer_id, owner_id, share, views, used, version, updated)"
                " VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
                (image_id, viewer_id, owner, share, views, version, now),
            )
        else:
            _check_change(row, owner, version)
            tx.execute(
                "UPDATE shares SET share = ?, views = ?, version = ?, updated = ?"
                " WHERE image_id = ? AND viewer_id = ?",
                (share, views, version, now, image_id, viewer_id),
            )
        return _reply(tx, image_id, viewer_id)

    return await store._journaled("share_put", request_id, now, work)


def _check_change(row: tuple, owner: str, version: int) -> None:
    if row[0] != owner:
        raise OpError("not_owner", "another user holds the key share of this image for that viewer")
    if version <= int(row[1]):
        raise OpError(
            "rights_outdated", f"version {version} is not newer than the cloud's version {int(row[1])}"
        )


def _reply(tx: Tx, image_id: str, viewer_id: str) -> dict:
    row = tx.one(
        "SELECT views, used, version, share FROM shares WHERE image_id = ? AND viewer_id = ?",
        (image_id, viewer_id),
    )
    assert row is not None
    return {"image_id": image_id, "viewer_id": viewer_id, **_state(row)}


async def limit(
    store: Store, request_id: str | None, token: str, image_id: str, viewer_id: str, views: int, version: int
) -> dict:
    """Change the limit at once; ``views == 0`` revokes and deletes the share."""
    await store._wait_ready()
    th, now = token_hash(token), store._now()

    def work(tx: Tx) -> dict:
        owner = store._session(tx, th, now)
        row = tx.one(
            f"SELECT owner_id, version, share FROM shares WHERE image_id = ? AND viewer_id = ?"
            f"{tx.dialect.for_update}",
            (image_id, viewer_id),
        )
        if row is None:
            raise OpError("share_not_found", "the cloud holds no key share of this image for that viewer")
        _check_change(row, owner, version)
        if not row[2] and views > 0:
            raise OpError(
                "share_revoked", "this copy was revoked and its key share destroyed; share the image again"
            )
        if views == 0:  # revoke: the share goes, for good
            tx.execute(
                "UPDATE shares SET share = ?, views = 0, version = ?, updated = ?"
                " WHERE image_id = ? AND viewer_id = ?",
                (b"", version, now, image_id, viewer_id),
            )
        else:
            tx.execute(
                "UPDATE shares SET views = ?, version = ?, updated = ? WHERE image_id = ? AND viewer_id = ?",
                (views, version, now, image_id, viewer_id),
            )
        return _reply(tx, image_id, viewer_id)

    return await store._journaled("share_limit", request_id, now, work)


async def view(store: Store, request_id: str | None, token: str, image_id: str, owner_id: str) -> dict:
    """Count one view and release the sealed share, while views remain."""
    await store._wait_ready()
    th, now = token_hash(token), store._now()

    def work(tx: Tx) -> dict:
        viewer = store._session(tx, th, now)
        key = (image_id, viewer)
        row = tx.one("SELECT owner_id, share FROM shares WHERE image_id = ? AND viewer_id = ?", key)
        if row is None or row[0] != owner_id:
            raise _not_found()
        if not row[1]:
            raise _revoked()
        # One statement checks and counts: two views at once cannot both take the last one.
        counted = tx.execute(
            "UPDATE shares SET used = used + 1, updated = ?"
            " WHERE image_id = ? AND viewer_id = ? AND used < views AND share <> ?",
            (now, *key, b""),
        )
        if counted != 1:
            raise OpError("no_views_left", "no views of this image are left")
        row = tx.one(
            "SELECT views, used, version, share FROM shares WHERE image_id = ? AND viewer_id = ?", key
        )
        assert row is not None
        return {
            "image_id": image_id,
            **_state(row),
            "share": base64.b64encode(bytes(row[3])).decode("ascii"),
        }

    return await store._journaled("share_view", request_id, now, work)


# -- op handlers -------------------------------------------------------------------------------------


def _store(ctx: RequestContext) -> Store:
    store = ctx.server.directory
    if store is None:
        raise OpError("directory_unavailable", "this server has no directory; try another server")
    return store


def _request_id(ctx: RequestContext) -> str | None:
    rid = ctx.request_id
    return rid if isinstance(rid, str) and rid else None


def _common(args: Any) -> tuple[str, str]:
    return v.token(v.require(args, "token")), v.uuid_text(v.require(args, "image_id"), "image_id")


def _version(args: Any) -> int:
    return v.integer(v.require(args, "version"), "version", low=1, high=MAX_VERSION)


async def share_put(ctx: RequestContext, args: JSONDict) -> JSONDict:
    """args: token, image_id, viewer_id, share (base64 of the sealed share), views (1..1000), version
    -> image_id, viewer_id, views, used, views_left, version, revoked."""
    token, image_id = _common(args)
    viewer_id = v.uuid_text(v.require(args, "viewer_id"), "viewer_id")
    share = v.b64decode(v.require(args, "share"), "share", max_chars=4 * SEALED_SHARE_SIZE // 3 + 4)
    if len(share) != SEALED_SHARE_SIZE:
        raise v.bad(f"share must be the base64 of a {SEALED_SHARE_SIZE}-byte sealed key share")
    views = v.integer(v.require(args, "views"), "views", low=1, high=MAX_VIEWS)
    return await put(_store(ctx), _request_id(ctx), token, image_id, viewer_id, share, views, _version(args))


async def share_limit(ctx: RequestContext, args: JSONDict) -> JSONDict:
    """args: token, image_id, viewer_id, views (0..1000; 0 revokes), version -> as share_put."""
    token, image_id = _common(args)
    viewer_id = v.uuid_text(v.require(args, "viewer_id"), "viewer_id")
    views = v.integer(v.require(args, "views"), "views", low=0, high=MAX_VIEWS)
    return await limit(_store(ctx), _request_id(ctx), token, image_id, viewer_id, views, _version(args))


async def share_view(ctx: RequestContext, args: JSONDict) -> JSONDict:
    """args: token, image_id, owner_id -> image_id, share (base64, sealed for the caller), views, used,
    views_left, version, revoked."""
    token, image_id = _common(args)
    owner_id = v.uuid_text(v.require(args, "owner_id"), "owner_id")
    return await view(_store(ctx), _request_id(ctx), token, image_id, owner_id)


OPS: dict[str, Handler] = {"share_put": share_put, "share_limit": share_limit, "share_view": share_view}
