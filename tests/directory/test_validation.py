"""Property tests: every operation's input validation, on both backends.

Any JSON the network can carry (text with SQL metacharacters, very long text, lone surrogates,
which is what non-UTF-8 bytes become, wrong types, missing keys) is either accepted, stored and
given back verbatim, or rejected with an ``OpError`` and a known code: never another exception.
"""

from __future__ import annotations

import base64
import json
import unicodedata
import uuid

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudp2p.directory.ops import OPS
from cloudp2p.ops import OpError
from tests.directory.conftest import call, keys, new_user, png_b64

CODES = {
    "share_not_found",
    "share_revoked",
    "no_views_left",
    "rights_outdated",
    "bad_request",
    "not_signed_in",
    "bad_credentials",
    "username_taken",
    "user_not_found",
    "image_id_taken",
    "image_not_found",
    "not_owner",
    "too_many_images",
    "bad_thumbnail",
    "queue_full",
    "bad_cursor",
    "request_id_reused",
}

SQL = [
    "'; DROP TABLE users; --",
    '" OR 1=1 --',
    "' OR ''='",
    "%s",
    "%(x)s",
    "?",
    "\\",
    "`users`",
    "\x00",
    "a\nb",
    "😀" * 3,
    "x" * 256,
]
surrogate = st.integers(0xD800, 0xDFFF).map(chr)
nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(SQL),
    st.text(min_size=250, max_size=2000),
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=10), surrogate, st.text(max_size=10)),
    st.lists(st.one_of(st.characters(), surrogate), max_size=20).map("".join),
)
json_value = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        nasty_text,
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(nasty_text, inner, max_size=4)),
    max_leaves=8,
)
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@pytest.fixture
def who(store):
    """A signed-in user whose token, id and name the strategies can use."""
    user = pytest_twisted.blockon(defer_new_user(store))
    return user


def defer_new_user(store):
    from twisted.internet import defer

    return defer.Deferred.fromCoroutine(new_user(store, name="prop_" + uuid.uuid4().hex[:8]))


def valid(who: dict) -> dict[str, st.SearchStrategy]:
    return {
        "username": st.one_of(
            st.from_regex(r"[a-z][a-z0-9_.\-]{2,20}", fullmatch=True), st.just(who["username"])
        ),
        "password": st.text(min_size=8, max_size=40),
        "keys": st.builds(keys),
        "token": st.just(who["token"]),
        "port": st.integers(1, 65535),
        "host": st.sampled_from(["127.0.0.1", "::1", "192.0.2.1"]),
        "image_id": st.uuids().map(str),
        "name": nasty_text,
        "size": st.integers(0, 10**12),
        "thumbnail": st.just(png_b64()),
        "cursor": st.none(),
        "limit": st.integers(1, 200),
        "user_id": st.just(who["user_id"]),
        "to": st.just(who["user_id"]),
        "to_username": st.just(who["username"]),
        "kind": st.sampled_from(["image_request", "rights_change"]),
        "body": st.dictionaries(nasty_text, json_value, max_size=4),
        "after": st.integers(0, 1000),
        "up_to": st.integers(0, 10**6),
        "ids": st.lists(st.integers(1, 10**6), max_size=5),
        "viewer_id": st.just(who["user_id"]),
        "owner_id": st.just(who["user_id"]),
        "share": st.binary(min_size=92, max_size=92).map(lambda b: base64.b64encode(b).decode()),
        "views": st.integers(0, 1000),
        "version": st.integers(1, 5),
    }


ARGS = {
    "register": ("username", "password", "keys"),
    "sign_in": ("username", "password", "port", "host"),
    "sign_out": ("token",),
    "heartbeat": ("token", "port", "host"),
    "publish_image": ("token", "image_id", "name", "size", "thumbnail"),
    "unpublish_image": ("token", "image_id"),
    "list_online": ("token", "cursor", "limit"),
    "lookup_user": ("token", "username", "user_id"),
    "queue_message": ("token", "to", "to_username", "kind", "body"),
    "fetch_queued": ("token", "after", "limit"),
    "ack_queued": ("token", "up_to", "ids"),
    "share_put": ("token", "image_id", "viewer_id", "share", "views", "version"),
    "share_limit": ("token", "image_id", "viewer_id", "views", "version"),
    "share_view": ("token", "image_id", "owner_id"),
}


def test_every_op_is_covered():
    assert set(ARGS) == set(OPS)


@pytest.mark.parametrize("op", sorted(ARGS))
@SETTINGS
@given(data=st.data())
@pytest_twisted.ensureDeferred
async def test_any_input_gets_a_result_or_a_clean_error(store, who, op, data):
    strategies = valid(who)
    mode = data.draw(st.sampled_from(["valid", "one_bad", "random", "not_an_object"]), label="mode")
    if mode == "not_an_object":
        args = data.draw(json_value, label="args")
    elif mode == "random":
        optional = {k: st.one_of(strategies[k], json_value) for k in ARGS[op]}
        args = data.draw(st.fixed_dictionaries({}, optional=optional), label="args")
    else:
        args = data.draw(st.fixed_dictionaries({k: strategies[k] for k in ARGS[op]}), label="args")
        if mode == "one_bad" or op in ("lookup_user", "queue_message"):  # these take one of two keys
            key = data.draw(st.sampled_from(ARGS[op]), label="key")
            if data.draw(st.booleans(), label="delete"):
                del args[key]
            else:
                args[key] = data.draw(json_value, label="bad value")
    if op == "sign_out" and args == {"token": who["token"]}:
        return  # a successful sign-out would end the session the other examples use
    try:
        result = await call(store, op, args)
    except OpError as e:
        assert e.code in CODES, e
        assert isinstance(e.message, str) and e.message
    else:
        assert isinstance(result, dict)
        json.dumps(result)  # the router must be able to send it


@SETTINGS
@given(name=nasty_text)
@pytest_twisted.ensureDeferred
async def test_image_names_are_stored_verbatim_or_refused(store, who, name):
    image_id = str(uuid.uuid4())
    args = {"token": who["token"], "image_id": image_id, "name": name, "size": 5, "thumbnail": png_b64()}
    try:
        await call(store, "publish_image", args)
    except OpError as e:
        assert e.code == "bad_request" and "name" in e.message
        assert any(unicodedata.category(c) in ("Cc", "Cs") for c in name) or not 1 <= len(name) <= 255
        return
    rows = await store.db.run(
        lambda tx: tx.one("SELECT name FROM images WHERE id = ?", (image_id,)), write=False
    )
    assert rows[0] == name
    await call(store, "unpublish_image", {"token": who["token"], "image_id": image_id})


@SETTINGS
@given(body=st.dictionaries(nasty_text, json_value, max_size=4))
@pytest_twisted.ensureDeferred
async def test_message_bodies_come_back_verbatim(store, who, body):
    # What the network can deliver: JSON decoding joins an escaped surrogate pair into one character.
    body = json.loads(json.dumps(body))
    args = {"token": who["token"], "to": who["user_id"], "kind": "rights_change", "body": body}
    try:
        reply = await call(store, "queue_message", args)
    except OpError as e:
        assert e.code == "bad_request"  # NaN/infinity are not JSON, or too big
        return
    page = await call(
        store, "fetch_queued", {"token": who["token"], "after": reply["message_id"] - 1, "limit": 1}
    )
    [message] = page["messages"]
    assert message["id"] == reply["message_id"]
    assert json.dumps(message["body"], sort_keys=True) == json.dumps(body, sort_keys=True)
    await call(store, "ack_queued", {"token": who["token"], "ids": [reply["message_id"]]})


@SETTINGS
@given(username=nasty_text, password=nasty_text)
@pytest_twisted.ensureDeferred
async def test_usernames_and_passwords(store, username, password):
    try:
        reply = await call(store, "register", {"username": username, "password": password, "keys": keys()})
    except OpError as e:
        assert e.code in ("bad_request", "username_taken")
        return
    assert reply["username"] == username
    session = await call(store, "sign_in", {"username": username, "password": password})
    assert session["user_id"] == reply["user_id"]
