"""Regressions from `make fuzz` (bench/fuzz.py): client datagrams that escaped as TypeError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudp2p.routing import client_wire as wire

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@pytest.mark.parametrize("kind", [[], ["req"], {}, {"t": "req"}])
def test_unhashable_datagram_type_is_a_wire_error(kind):
    data = json.dumps({"v": 1, "t": kind, "id": "0" * 32, "op": "ping", "args": {}}).encode()
    with pytest.raises(wire.WireError) as e:
        wire.decode_request(data)
    assert e.value.code == "bad_request"
    assert e.value.request_id == "0" * 32  # the server can still address its error reply


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["v", "t", "id", "op", "args"]), JSON_VALUES)
def test_any_json_value_in_any_request_field_is_accepted_or_a_wire_error(field, value):
    obj = {"v": 1, "t": "req", "id": "0" * 32, "op": "ping", "args": {}}
    obj[field] = value
    try:
        wire.decode_request(json.dumps(obj).encode())
    except wire.WireError:
        pass
