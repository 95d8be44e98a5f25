"""Key shares of enforced copies (issue 17), on SQLite and MariaDB: the cloud counts views and
releases the owner's sealed share only while views remain; changes are the owner's alone."""

from __future__ import annotations

import base64
import os
import uuid

import pytest
import pytest_twisted
from twisted.internet import defer

from cloudp2p.ops import OpError
from tests.directory.conftest import call, new_user

SHARE = base64.b64encode(os.urandom(92)).decode()


async def _granted(store, views: int = 2):
    owner, viewer = await new_user(store), await new_user(store)
    image_id = str(uuid.uuid4())
    reply = await call(
        store,
        "share_put",
        {
            "token": owner["token"],
            "image_id": image_id,
            "viewer_id": viewer["user_id"],
            "share": SHARE,
            "views": views,
            "version": 1,
        },
    )
    assert reply["views_left"] == views and reply["used"] == 0 and not reply["revoked"]
    return owner, viewer, image_id


def _view(store, viewer, image_id, owner, **kw):
    args = {"token": viewer["token"], "image_id": image_id, "owner_id": owner["user_id"]}
    return call(store, "share_view", args, **kw)


def _limit(store, owner, viewer, image_id, views, version, **kw):
    args = {
        "token": owner["token"],
        "image_id": image_id,
        "viewer_id": viewer["user_id"],
        "views": views,
        "version": version,
    }
    return call(store, "share_limit", args, **kw)


async def _code(d) -> str:
    with pytest.raises(OpError) as e:
        await d
    return e.value.code


@pytest_twisted.ensureDeferred
async def test_views_are_counted_and_the_share_released_while_they_remain(store):
    owner, viewer, image_id = await _granted(store, views=2)
    first = await _view(store, viewer, image_id, owner)
    assert first["share"] == SHARE and first["views_left"] == 1 and first["used"] == 1
    second = await _view(store, viewer, image_id, owner)
    assert second["views_left"] == 0
    assert await _code(_view(store, viewer, image_id, owner)) == "no_views_left"


@pytest_twisted.ensureDeferred
async def test_a_retried_view_is_counted_once(store):
    owner, viewer, image_id = await _granted(store, views=2)
    rid = str(uuid.uuid4())
    a = await _view(store, viewer, image_id, owner, request_id=rid)
    b = await _view(store, viewer, image_id, owner, request_id=rid)  # re-run on another server
    assert a == b and a["used"] == 1
    assert (await _view(store, viewer, image_id, owner))["used"] == 2


@pytest_twisted.ensureDeferred
async def test_concurrent_views_never_take_more_than_the_limit(store):
    owner, viewer, image_id = await _granted(store, views=3)
    results = await defer.DeferredList(
        [_view(store, viewer, image_id, owner) for _ in range(8)], consumeErrors=True
    )
    released = [r for ok, r in results if ok]
    refused = [r.value.code for ok, r in results if not ok]
    assert len(released) == 3 and sorted(r["used"] for r in released) == [1, 2, 3]
    assert set(refused) == {"no_views_left"}


@pytest_twisted.ensureDeferred
async def test_revoke_destroys_the_share_for_good(store):
    owner, viewer, image_id = await _granted(store, views=5)
    reply = await _limit(store, owner, viewer, image_id, 0, 2)
    assert reply["revoked"] and reply["views_left"] == 0
    assert await _code(_view(store, viewer, image_id, owner)) == "share_revoked"
    assert await _code(_limit(store, owner, viewer, image_id, 3, 3)) == "share_revoked"
    row = await store._read(
        lambda tx: tx.one("SELECT share FROM shares WHERE image_id = ?", (image_id,))
    )
    assert bytes(row[0]) == b""  # the bytes are gone from the row, not only hidden


@pytest_twisted.ensureDeferred
async def test_set_views_changes_the_limit_at_once_and_older_versions_are_refused(store):
    owner, viewer, image_id = await _granted(store, views=1)
    await _view(store, viewer, image_id, owner)
    assert (await _limit(store, owner, viewer, image_id, 3, 2))["views_left"] == 2
    assert await _code(_limit(store, owner, viewer, image_id, 9, 2)) == "rights_outdated"
    assert (await _view(store, viewer, image_id, owner))["views_left"] == 1
    assert (await _limit(store, owner, viewer, image_id, 2, 3))["views_left"] == 0
    assert await _code(_view(store, viewer, image_id, owner)) == "no_views_left"


@pytest_twisted.ensureDeferred
async def test_only_the_owner_changes_a_share_and_only_the_viewer_gets_it(store):
    owner, viewer, image_id = await _granted(store)
    other = await new_user(store)
    # another user (the viewer included) cannot change the limit or replace the share
    assert await _code(_limit(store, viewer, viewer, image_id, 50, 9)) == "not_owner"
    put = {
        "token": other["token"],
        "image_id": image_id,
        "viewer_id": viewer["user_id"],
        "share": SHARE,
        "views": 9,
        "version": 9,
    }
    assert await _code(call(store, "share_put", put)) == "not_owner"
    # another viewer gets nothing, and naming another owner finds nothing
    assert await _code(_view(store, other, image_id, owner)) == "share_not_found"
    assert await _code(_view(store, viewer, image_id, other)) == "share_not_found"
    assert (await _view(store, viewer, image_id, owner))["used"] == 1


@pytest_twisted.ensureDeferred
async def test_a_regrant_replaces_the_share_and_keeps_the_views_used(store):
    owner, viewer, image_id = await _granted(store, views=1)
    await _view(store, viewer, image_id, owner)
    new_share = base64.b64encode(os.urandom(92)).decode()
    args = {
        "token": owner["token"],
        "image_id": image_id,
        "viewer_id": viewer["user_id"],
        "share": new_share,
        "views": 3,
        "version": 2,
    }
    assert (await call(store, "share_put", args))["views_left"] == 2
    assert (await _view(store, viewer, image_id, owner))["share"] == new_share


@pytest.mark.parametrize(
    "bad",
    [
        {"share": base64.b64encode(os.urandom(91)).decode()},
        {"share": "not base64!"},
        {"views": 0},
        {"views": 1001},
        {"version": 0},
        {"viewer_id": "bob"},
        {"image_id": 7},
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_arguments_are_refused_and_change_nothing(store, bad):
    owner, viewer = await new_user(store), await new_user(store)
    args = {
        "token": owner["token"],
        "image_id": str(uuid.uuid4()),
        "viewer_id": viewer["user_id"],
        "share": SHARE,
        "views": 2,
        "version": 1,
        **bad,
    }
    assert await _code(call(store, "share_put", args)) == "bad_request"
    count = await store._read(lambda tx: tx.one("SELECT COUNT(*) FROM shares"))
    assert int(count[0]) == 0


@pytest_twisted.ensureDeferred
async def test_without_a_session_nothing_is_released(store):
    owner, viewer, image_id = await _granted(store)
    args = {"token": "x" * 40, "image_id": image_id, "owner_id": owner["user_id"]}
    assert await _code(call(store, "share_view", args)) == "not_signed_in"
