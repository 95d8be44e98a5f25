"""Users, sessions, presence and lookups, on both backends."""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted

from cloudp2p.ops import OpError
from tests.directory.conftest import call, keys, new_user


async def _error(d) -> OpError:
    with pytest.raises(OpError) as info:
        await d
    return info.value


@pytest_twisted.ensureDeferred
async def test_register_sign_in_lookup(store):
    k = keys()
    reply = await call(store, "register", {"username": "Alice.B-1", "password": "p" * 8, "keys": k})
    assert uuid.UUID(reply["user_id"]) and reply["username"] == "Alice.B-1"
    session = await call(store, "sign_in", {"username": "alice.b-1", "password": "p" * 8})
    assert session["user_id"] == reply["user_id"] and session["username"] == "Alice.B-1"
    assert session["expires"] > store._now() and session["queued"] == 0 and len(session["token"]) >= 40
    found = await call(store, "lookup_user", {"token": session["token"], "username": "ALICE.B-1"})
    assert found["user_id"] == reply["user_id"] and found["keys"] == k and found["online"] is False
    by_id = await call(store, "lookup_user", {"token": session["token"], "user_id": reply["user_id"]})
    assert by_id == found
    missing = await _error(call(store, "lookup_user", {"token": session["token"], "username": "nobody"}))
    assert missing.code == "user_not_found"


@pytest_twisted.ensureDeferred
async def test_username_taken_in_any_case(store):
    await call(store, "register", {"username": "bob", "password": "password", "keys": keys()})
    e = await _error(call(store, "register", {"username": "BOB", "password": "password", "keys": keys()}))
    assert e.code == "username_taken" and "BOB" in e.message


@pytest_twisted.ensureDeferred
async def test_register_rerun_returns_the_recorded_reply(store):
    args = {"username": "carol", "password": "password", "keys": keys()}
    first = await call(store, "register", args, request_id="req-1")
    again = await call(store, "register", args, request_id="req-1")
    assert again == first
    rows = await store.db.run(
        lambda tx: tx.all("SELECT id FROM users WHERE username_key = 'carol'"), write=False
    )
    assert rows == [(first["user_id"],)]
    other = await _error(call(store, "register", args, request_id="req-2"))
    assert other.code == "username_taken"
    reused = await _error(call(store, "sign_out", {"token": "x"}, request_id="req-1"))
    assert reused.code == "request_id_reused"


@pytest_twisted.ensureDeferred
async def test_bad_credentials_do_not_tell_unknown_from_wrong(store):
    await call(store, "register", {"username": "dave", "password": "password", "keys": keys()})
    wrong = await _error(call(store, "sign_in", {"username": "dave", "password": "wrongpass"}))
    unknown = await _error(call(store, "sign_in", {"username": "erin", "password": "password"}))
    assert wrong.code == unknown.code == "bad_credentials"
    assert wrong.message == unknown.message


@pytest_twisted.ensureDeferred
async def test_password_is_never_stored(store):
    await call(store, "register", {"username": "frank", "password": "sup3r-secret!", "keys": keys()})
    row = await store.db.run(lambda tx: tx.one("SELECT password FROM users"), write=False)
    assert "sup3r-secret!" not in row[0] and row[0].startswith("scrypt$1024$8$1$")


@pytest_twisted.ensureDeferred
async def test_tokens_are_stored_hashed(store):
    user = await new_user(store)
    rows = await store.db.run(lambda tx: tx.all("SELECT token_hash FROM sessions"), write=False)
    assert len(rows) == 1 and user["token"] not in rows[0][0]


ACTING = {
    "sign_out": {},
    "heartbeat": {"port": 4000},
    "publish_image": None,  # filled in below: needs valid other args
    "unpublish_image": {"image_id": str(uuid.uuid4())},
    "list_online": {},
    "lookup_user": {"username": "someone"},
    "queue_message": {"to_username": "someone", "kind": "image_request", "body": {}},
    "fetch_queued": {},
    "ack_queued": {"up_to": 5},
}


@pytest.mark.parametrize("op", sorted(ACTING))
@pytest.mark.parametrize("token", [None, "", "not-a-token", "x" * 500, 7])
@pytest_twisted.ensureDeferred
async def test_acting_requests_need_a_valid_token(store, op, token):
    from tests.directory.conftest import png_b64

    args = ACTING[op]
    if args is None:
        args = {"image_id": str(uuid.uuid4()), "name": "n", "size": 1, "thumbnail": png_b64()}
    args = dict(args)
    if token is not None:
        args["token"] = token
    e = await _error(call(store, op, args))
    assert e.code in ("not_signed_in", "bad_request")
    if token is not None and isinstance(token, str) and 0 < len(token) <= 128:
        assert e.code == "not_signed_in"


@pytest_twisted.ensureDeferred
async def test_sessions_expire_and_heartbeats_renew_them(make_store, clock):
    store = make_store(clock=clock, session_ttl=100.0, presence_ttl=1000.0)
    user = await new_user(store)
    clock.advance(90)
    await call(store, "heartbeat", {"token": user["token"], "port": 4000})
    clock.advance(90)  # 180 s after sign-in, 90 s after the heartbeat: still valid
    await call(store, "list_online", {"token": user["token"]})
    clock.advance(11)
    e = await _error(call(store, "list_online", {"token": user["token"]}))
    assert e.code == "not_signed_in"


ALICE = ("192.0.2.7", 40000)


@pytest_twisted.ensureDeferred
async def test_presence_ttl_and_sign_out(make_store, clock):
    store = make_store(clock=clock, presence_ttl=30.0)
    alice = await new_user(store)
    bob = await new_user(store)
    await call(store, "heartbeat", {"token": alice["token"], "port": 5001, "host": "192.0.2.7"}, client=ALICE)
    await call(store, "heartbeat", {"token": bob["token"], "port": 5002}, client=("127.0.0.9", 1))
    # Presence is the address requests come from: another host is refused, and changes nothing.
    e = await _error(call(store, "heartbeat", {"token": bob["token"], "port": 5002, "host": "192.0.2.7"}))
    assert e.code == "bad_request" and "come from" in e.message

    async def online() -> dict:
        page = await call(store, "list_online", {"token": alice["token"]})
        return {u["user_id"]: (u["host"], u["port"]) for u in page["users"]}

    assert await online() == {alice["user_id"]: ("192.0.2.7", 5001), bob["user_id"]: ("127.0.0.9", 5002)}
    found = await call(store, "lookup_user", {"token": alice["token"], "user_id": bob["user_id"]})
    assert found["online"] and found["port"] == 5002
    clock.advance(20)
    await call(store, "heartbeat", {"token": alice["token"], "port": 5001}, client=ALICE)
    clock.advance(15)  # bob silent for 35 s > 30 s
    assert await online() == {alice["user_id"]: ("192.0.2.7", 5001)}
    found = await call(store, "lookup_user", {"token": alice["token"], "user_id": bob["user_id"]})
    assert not found["online"] and found["host"] is None
    # Sign-out shows the user offline at once; a re-run of the same request gets the same reply.
    await call(store, "heartbeat", {"token": bob["token"], "port": 5002})
    assert bob["user_id"] in await online()
    assert await call(store, "sign_out", {"token": bob["token"]}, request_id="bye") == {}
    assert await call(store, "sign_out", {"token": bob["token"]}, request_id="bye") == {}
    assert bob["user_id"] not in await online()
    e = await _error(call(store, "heartbeat", {"token": bob["token"], "port": 5002}))
    assert e.code == "not_signed_in"


@pytest_twisted.ensureDeferred
async def test_sign_in_with_an_address_is_online_at_once(store):
    user = await new_user(store, port=6000)
    page = await call(store, "list_online", {"token": user["token"]})
    assert [(u["user_id"], u["host"], u["port"]) for u in page["users"]] == [
        (user["user_id"], "127.0.0.1", 6000)
    ]


@pytest_twisted.ensureDeferred
async def test_purge_removes_expired_rows(make_store, clock):
    store = make_store(clock=clock, session_ttl=100.0, presence_ttl=10.0, journal_ttl=50.0)
    user = await new_user(store)
    await call(store, "heartbeat", {"token": user["token"], "port": 1234})
    assert await store.purge_expired() == {"sessions": 0, "presence": 0, "journal": 0}
    clock.advance(60)
    assert await store.purge_expired() == {"sessions": 0, "presence": 1, "journal": 1}  # the register
    clock.advance(50)
    assert await store.purge_expired() == {"sessions": 1, "presence": 0, "journal": 0}
