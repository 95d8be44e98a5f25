"""Regressions from `make fuzz` (bench/fuzz.py): transfer datagrams that once escaped as internal errors."""

from __future__ import annotations

import os

import pytest

from cloudp2p.transfer import wire


@pytest.mark.parametrize("body", [b"[" * 50_000, b'{"a":' * 5000 + b"1" + b"}" * 5000])
@pytest.mark.parametrize("kind", [wire.REQUEST, wire.ACCEPT, wire.REFUSE, wire.CLOSE])
def test_deeply_nested_control_body_is_a_wire_error(kind, body):
    tid = os.urandom(16)
    datagram = wire._seal(wire._prefix(kind, tid) + body)  # a valid CRC around it
    assert wire.parse_header(datagram) == (kind, tid)
    with pytest.raises(wire.WireError):
        wire.parse_control(datagram)
