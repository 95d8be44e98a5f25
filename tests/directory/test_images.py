"""Shared images, thumbnails and the paginated list of online users, on both backends."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import pytest_twisted

from cloudp2p.directory.thumbnails import MAX_BYTES, check_thumbnail
from cloudp2p.ops import OpError
from tests.directory.conftest import call, new_user, png, png_b64


async def _error(d) -> OpError:
    with pytest.raises(OpError) as info:
        await d
    return info.value


def _publish_args(user: dict, **kw) -> dict:
    return {
        "token": user["token"],
        "image_id": str(uuid.uuid4()),
        "name": "a cat.png",
        "size": 1000,
        "thumbnail": png_b64(),
        **kw,
    }


@pytest_twisted.ensureDeferred
async def test_publish_list_and_unpublish(store):
    owner = await new_user(store, port=7000)
    viewer = await new_user(store)
    args = _publish_args(owner, name="O'Brien\"; DROP TABLE users; -- 🐱 ü", size=123456)
    assert await call(store, "publish_image", args) == {"image_id": args["image_id"]}
    page = await call(store, "list_online", {"token": viewer["token"]})
    [entry] = page["users"]
    assert entry["user_id"] == owner["user_id"] and entry["port"] == 7000
    [image] = entry["images"]
    assert image == {
        "image_id": args["image_id"],
        "name": args["name"],
        "size": 123456,
        "mime": "image/png",
        "thumbnail": args["thumbnail"],
    }
    # Publishing the same id again updates it; a re-run of an unpublish gets the recorded reply.
    await call(store, "publish_image", {**args, "name": "renamed", "thumbnail": png_b64(fmt="JPEG")})
    page = await call(store, "list_online", {"token": viewer["token"]})
    assert [(i["name"], i["mime"]) for i in page["users"][0]["images"]] == [("renamed", "image/jpeg")]
    unpublish = {"token": owner["token"], "image_id": args["image_id"]}
    assert await call(store, "unpublish_image", unpublish, request_id="u1") == {"image_id": args["image_id"]}
    assert await call(store, "unpublish_image", unpublish, request_id="u1") == {"image_id": args["image_id"]}
    e = await _error(call(store, "unpublish_image", unpublish, request_id="u2"))
    assert e.code == "image_not_found"
    page = await call(store, "list_online", {"token": viewer["token"]})
    assert page["users"][0]["images"] == []


@pytest_twisted.ensureDeferred
async def test_image_ids_belong_to_one_owner(store):
    alice = await new_user(store)
    bob = await new_user(store)
    args = _publish_args(alice)
    await call(store, "publish_image", args)
    e = await _error(call(store, "publish_image", {**args, "token": bob["token"]}))
    assert e.code == "image_id_taken"
    e = await _error(call(store, "unpublish_image", {"token": bob["token"], "image_id": args["image_id"]}))
    assert e.code == "not_owner"


@pytest_twisted.ensureDeferred
async def test_images_per_user_are_bounded(make_store):
    store = make_store(max_images=2)
    user = await new_user(store)
    await call(store, "publish_image", _publish_args(user))
    await call(store, "publish_image", _publish_args(user))
    e = await _error(call(store, "publish_image", _publish_args(user)))
    assert e.code == "too_many_images"


def _bmp() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "BMP")
    return out.getvalue()


def _bomb(side: int = 100000) -> bytes:
    """A tiny PNG whose header claims ``side`` x ``side`` pixels."""
    import struct
    import zlib

    data = bytearray(png(4))
    ihdr = data[12:29]
    ihdr[4:12] = struct.pack(">II", side, side)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


@pytest.mark.parametrize(
    "thumbnail, words",
    [
        (b"", "empty"),
        (b"hello, not an image", "PNG or JPEG"),
        (png(129), "129x129"),
        (png(8)[:-30], "damaged"),
        (png(100, noise=True), "bytes"),
        (_bomb(), "far more pixels"),
        (_bomb(10000), "10000x10000"),  # past Pillow's warning limit, under its error limit
        (_bmp(), "PNG or JPEG"),
    ],
)
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_thumbnails_are_refused(thumbnail, words):
    with pytest.raises(OpError) as info:
        check_thumbnail(thumbnail)
    assert info.value.code == "bad_thumbnail" and words in info.value.message


def test_good_thumbnails():
    assert check_thumbnail(png(128)) == "image/png"
    assert check_thumbnail(png(40, fmt="JPEG")) == "image/jpeg"
    assert len(png(60, noise=True)) <= MAX_BYTES and check_thumbnail(png(60, noise=True)) == "image/png"


@pytest_twisted.ensureDeferred
async def test_publish_refuses_a_bad_thumbnail_through_the_op(store):
    user = await new_user(store)
    e = await _error(
        call(store, "publish_image", _publish_args(user, thumbnail=base64.b64encode(png(200)).decode()))
    )
    assert e.code == "bad_thumbnail"
    e = await _error(call(store, "publish_image", _publish_args(user, thumbnail="not base64!")))
    assert e.code == "bad_request" and "thumbnail" in e.message


async def _walk(store, token: str, limit: int) -> list[dict]:
    pages, cursor = [], None
    for _ in range(200):
        args = {"token": token, "limit": limit}
        if cursor is not None:
            args["cursor"] = cursor
        page = await call(store, "list_online", args)
        # The reply with the router's envelope must fit one 60,000-byte datagram.
        assert len(json.dumps({"ok": True, "result": page, "id": str(uuid.uuid4())})) <= 60_000
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("list_online never ended")


@pytest_twisted.ensureDeferred
async def test_list_online_pages_by_count(store):
    viewer = await new_user(store)
    users = [await new_user(store, port=8000 + i) for i in range(23)]
    pages = await _walk(store, viewer["token"], limit=5)
    seen = [u["user_id"] for page in pages for u in page["users"]]
    assert seen == sorted(u["user_id"] for u in users) and len(pages) == 5
    assert all(len(p["users"]) <= 5 for p in pages)


@pytest_twisted.ensureDeferred
async def test_list_online_pages_by_bytes(store):
    """Users with many big thumbnails: pages split inside a user, no image lost or repeated."""
    viewer = await new_user(store)
    published: dict[str, set[str]] = {}
    thumbs = [base64.b64encode(png(60, noise=True)).decode() for _ in range(3)]
    for i in range(4):
        owner = await new_user(store, port=9000 + i)
        published[owner["user_id"]] = set()
        for j in range(9):
            args = _publish_args(owner, thumbnail=thumbs[j % 3], name=f"image {j}")
            await call(store, "publish_image", args)
            published[owner["user_id"]].add(args["image_id"])
    pages = await _walk(store, viewer["token"], limit=50)
    assert len(pages) >= 6  # 36 thumbnails of ~14 KB base64 cannot fit in fewer pages
    got: dict[str, list[str]] = {}
    for page in pages:
        for entry in page["users"]:
            got.setdefault(entry["user_id"], []).extend(i["image_id"] for i in entry["images"])
    assert {k: sorted(v) for k, v in got.items() if v} == {k: sorted(v) for k, v in published.items()}
    assert all(len(v) == len(set(v)) for v in got.values())


@pytest.mark.parametrize(
    "cursor", ["", "x", "u.nope", "i." + str(uuid.uuid4()) + ".bad", "u." + "a" * 200, 5]
)
@pytest_twisted.ensureDeferred
async def test_list_online_refuses_a_bad_cursor(store, cursor):
    user = await new_user(store)
    e = await _error(call(store, "list_online", {"token": user["token"], "cursor": cursor}))
    assert e.code in ("bad_cursor",)
