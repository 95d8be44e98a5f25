"""Queued messages: in order, exactly once, kept until acknowledged; on both backends."""

from __future__ import annotations

import pytest
import pytest_twisted

from cloudp2p.ops import OpError
from tests.directory.conftest import call, new_user


async def _error(d) -> OpError:
    with pytest.raises(OpError) as info:
        await d
    return info.value


@pytest_twisted.ensureDeferred
async def test_hand_over_in_order_and_exactly_once(store):
    owner = await new_user(store)
    viewer = await new_user(store)
    sent = []
    for i in range(5):
        kind = "image_request" if i % 2 else "rights_change"
        reply = await call(
            store,
            "queue_message",
            {"token": viewer["token"], "to": owner["user_id"], "kind": kind, "body": {"n": i, "s": "é\"'"}},
            request_id=f"q{i}",
        )
        sent.append(reply["message_id"])
    # A retried queue_message (same request id) adds nothing and answers the same id.
    again = await call(
        store,
        "queue_message",
        {
            "token": viewer["token"],
            "to": owner["user_id"],
            "kind": "rights_change",
            "body": {"n": 0, "s": "é\"'"},
        },
        request_id="q0",
    )
    assert again["message_id"] == sent[0]
    assert sent == sorted(sent)
    # Sign-in says how many wait; fetch hands them over in order, with the sender.
    session = await call(store, "sign_in", {"username": owner["username"], "password": owner["password"]})
    assert session["queued"] == 5
    token = session["token"]
    first = await call(store, "fetch_queued", {"token": token})
    assert [m["id"] for m in first["messages"]] == sent and first["more"] is False
    assert [m["body"]["n"] for m in first["messages"]] == [0, 1, 2, 3, 4]
    assert {m["from"] for m in first["messages"]} == {viewer["user_id"]}
    assert first["messages"][0]["from_username"] == viewer["username"]
    # The client crashed before acknowledging: the same messages come again.
    assert await call(store, "fetch_queued", {"token": token}) == first
    # Paging with after/limit.
    part = await call(store, "fetch_queued", {"token": token, "after": sent[1], "limit": 2})
    assert [m["id"] for m in part["messages"]] == sent[2:4] and part["more"] is True
    # Acknowledge up to the third; ack again (a retried request) removes nothing more.
    assert await call(store, "ack_queued", {"token": token, "up_to": sent[2]}) == {"removed": 3}
    assert await call(store, "ack_queued", {"token": token, "up_to": sent[2]}) == {"removed": 0}
    rest = await call(store, "fetch_queued", {"token": token})
    assert [m["id"] for m in rest["messages"]] == sent[3:]
    assert await call(store, "ack_queued", {"token": token, "ids": [sent[4], sent[4], 999999]}) == {
        "removed": 1
    }
    rest = await call(store, "fetch_queued", {"token": token})
    assert [m["id"] for m in rest["messages"]] == [sent[3]]


@pytest_twisted.ensureDeferred
async def test_messages_are_private_to_their_recipient(store):
    alice = await new_user(store)
    bob = await new_user(store)
    reply = await call(
        store,
        "queue_message",
        {
            "token": bob["token"],
            "to_username": alice["username"].upper(),
            "kind": "image_request",
            "body": {},
        },
    )
    assert reply["to"] == alice["user_id"]
    assert (await call(store, "fetch_queued", {"token": bob["token"]}))["messages"] == []
    assert await call(store, "ack_queued", {"token": bob["token"], "up_to": reply["message_id"]}) == {
        "removed": 0
    }
    assert len((await call(store, "fetch_queued", {"token": alice["token"]}))["messages"]) == 1


@pytest_twisted.ensureDeferred
async def test_queue_bounds(make_store):
    store = make_store(max_queue=3, max_body=300)
    alice = await new_user(store)
    bob = await new_user(store)
    base = {"token": bob["token"], "to": alice["user_id"], "kind": "image_request"}
    e = await _error(call(store, "queue_message", {**base, "body": {"x": "y" * 400}}))
    assert e.code == "bad_request" and "at most 300" in e.message
    for i in range(3):
        await call(store, "queue_message", {**base, "body": {"i": i}})
    e = await _error(call(store, "queue_message", {**base, "body": {"i": 3}}))
    assert e.code == "queue_full"
    e = await _error(
        call(store, "queue_message", {**base, "to": "8a6e0804-2bd0-4672-b79a-d80827ab4100", "body": {}})
    )
    assert e.code == "user_not_found"


@pytest_twisted.ensureDeferred
async def test_fetch_pages_by_bytes(make_store):
    store = make_store(max_body=16384)
    alice = await new_user(store)
    bob = await new_user(store)
    for i in range(8):
        await call(
            store,
            "queue_message",
            {
                "token": bob["token"],
                "to": alice["user_id"],
                "kind": "rights_change",
                "body": {"i": i, "pad": "z" * 15000},
            },
        )
    got, after = [], 0
    for _ in range(10):
        page = await call(store, "fetch_queued", {"token": alice["token"], "after": after})
        assert 0 < len(page["messages"]) <= 3
        got += [m["body"]["i"] for m in page["messages"]]
        after = page["messages"][-1]["id"]
        if not page["more"]:
            break
    assert got == list(range(8))
