"""The client <-> server datagram format: round trips, and garbage rejected with WireError only."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudp2p.routing import client_wire as wire

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=5)
request_ids = st.text("0123456789abcdef", min_size=32, max_size=32)
op_names = st.from_regex(r"[a-z][a-z0-9_]{0,30}", fullmatch=True)
bodies = st.builds(lambda r: {"ok": True, "result": r}, json_objects) | st.builds(
    lambda c, m: {"ok": False, "error": {"code": c, "message": m}}, st.text(max_size=20), st.text(max_size=40)
)


@given(request_ids, op_names, json_objects, st.booleans())
def test_request_round_trip(rid, op, args, direct):
    request = wire.Request(rid, op, args, direct=direct)
    assert wire.decode_request(request.encode()) == request


@given(st.one_of(st.none(), request_ids), bodies, st.one_of(st.none(), st.integers(1, 1000)))
def test_reply_round_trip(rid, body, server):
    reply = wire.Reply(rid, body, server)
    assert wire.decode_reply(reply.encode()) == reply


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_random_bytes_are_rejected_cleanly(data):
    for decode in (wire.decode_request, wire.decode_reply):
        try:
            decode(data)
        except wire.WireError:
            pass


@settings(max_examples=300)
@given(json_values)
def test_any_json_is_a_request_or_a_wire_error(value):
    data = json.dumps(value).encode()
    for decode in (wire.decode_request, wire.decode_reply):
        try:
            decode(data)
        except wire.WireError:
            pass


@settings(max_examples=200)
@given(request_ids, op_names, json_objects, st.data())
def test_bit_flips_never_raise_anything_else(rid, op, args, data):
    datagram = bytearray(wire.Request(rid, op, args).encode())
    i = data.draw(st.integers(0, len(datagram) - 1))
    datagram[i] ^= 1 << data.draw(st.integers(0, 7))
    try:
        decoded = wire.decode_request(bytes(datagram))
    except wire.WireError:
        return
    assert wire.is_request_id(decoded.request_id) and wire.is_op_name(decoded.op)


def test_request_ids_are_random_128_bit_hex():
    ids = {wire.new_request_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(wire.is_request_id(i) for i in ids)


@pytest.mark.parametrize(
    "obj, code",
    [
        ({"v": 1, "t": "req", "id": "A" * 32, "op": "ping", "args": {}}, "bad_request"),
        ({"v": 1, "t": "req", "id": "a" * 32, "op": "x" * 65, "args": {}}, "bad_request"),
        ({"v": 1, "t": "req", "id": "a" * 32, "op": "ping"}, "bad_request"),
        ({"v": 1, "t": "rep", "id": "a" * 32, "op": "ping", "args": {}}, "bad_request"),
        ({"v": 2, "t": "req", "id": "a" * 32, "op": "ping", "args": {}}, "bad_version"),
        ({"v": True, "t": "req", "id": "a" * 32, "op": "ping", "args": {}}, "bad_version"),
    ],
)
def test_request_field_checks(obj, code):
    with pytest.raises(wire.WireError) as info:
        wire.decode_request(json.dumps(obj).encode())
    assert info.value.code == code


def test_nan_and_deep_nesting_are_rejected():
    with pytest.raises(wire.WireError):
        wire.decode_request(b'{"v":1,"t":"req","id":"' + b"a" * 32 + b'","op":"ping","args":{"x":NaN}}')
    with pytest.raises(wire.WireError):
        wire.decode_request(b"[" * 50_000 + b"]" * 50_000)


def test_size_limits():
    big = {"blob": "x" * wire.MAX_PAYLOAD}
    with pytest.raises(wire.WireError) as info:
        wire.Request(wire.new_request_id(), "ping", big).encode()
    assert info.value.code == "too_large"
    with pytest.raises(wire.WireError) as info:
        wire.decode_request(b" " * (wire.MAX_DATAGRAM + 1))
    assert info.value.code == "too_large"


@pytest.mark.parametrize(
    "body",
    [
        {"ok": True},
        {"ok": True, "result": []},
        {"ok": False, "error": {"code": 1, "message": "m"}},
        {"ok": "yes", "result": {}},
        {"ok": True, "result": {}, "extra": 1},
    ],
)
def test_reply_body_checks(body):
    data = json.dumps({"v": 1, "t": "rep", "id": None, "server": 1, "body": body}).encode()
    with pytest.raises(wire.WireError):
        wire.decode_reply(data)
    with pytest.raises(ValueError):
        wire.Reply(None, body, 1)
