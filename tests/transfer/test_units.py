"""The datagram codec, the RFC 6298 estimator, the congestion window, the config section."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudp2p.config import Schema
from cloudp2p.errors import ConfigError
from cloudp2p.transfer import SECTION, TransferConfig, TransferManager, TransferMeta, wire
from cloudp2p.transfer.congestion import Aimd
from cloudp2p.transfer.errors import BadTransferMeta
from cloudp2p.transfer.receiver import estimate_truesize, window_for
from cloudp2p.transfer.rtt import RttEstimator

TID = bytes(range(16))


# -- wire -----------------------------------------------------------------------------------------


@given(seq=st.integers(0, 2**31 - 1), payload=st.binary(max_size=3000))
def test_data_roundtrip(seq, payload):
    datagram = wire.DataEncoder(TID).encode(seq, payload)
    assert len(datagram) == wire.DATA_HEADER_SIZE + len(payload)
    assert wire.parse_header(datagram) == (wire.DATA, TID)
    got_seq, got = wire.parse_data(datagram)
    assert (got_seq, bytes(got)) == (seq, payload)
    tid, got_seq, got = wire.parse_data_datagram(datagram)
    assert (tid, got_seq, bytes(got)) == (TID, seq, payload)


@given(
    cum=st.integers(0, 1000),
    gaps=st.lists(st.tuples(st.integers(1, 50), st.integers(1, 50)), max_size=wire.MAX_ACK_RANGES),
    window=st.integers(0, 2**32 - 1),
    echo=st.integers(-1, 2**31 - 1),
)
def test_ack_roundtrip(cum, gaps, window, echo):
    missing, pos = [], cum
    for skip, length in gaps:
        missing.append((pos + skip, pos + skip + length))
        pos += skip + length
    high = pos + 1
    datagram = wire.encode_ack(TID, cum, high, window, echo, missing)
    assert len(datagram) <= 1100
    assert wire.parse_header(datagram) == (wire.ACK, TID)
    assert wire.parse_ack(datagram) == (cum, high, window, echo, missing)


def test_control_roundtrip():
    datagram = wire.encode_control(wire.REQUEST, TID, {"nonce": "n", "have": None})
    assert wire.parse_header(datagram) == (wire.REQUEST, TID)
    assert wire.parse_control(datagram) == {"nonce": "n", "have": None}


@given(st.binary(max_size=200))
def test_garbage_is_rejected_with_wire_error_only(garbage):
    with pytest.raises(wire.WireError):
        wire.parse_data_datagram(garbage)  # a valid CRC-32 by chance: 1 in 2**32
    try:
        kind, _ = wire.parse_header(garbage)
    except wire.WireError:
        return
    for parse in (wire.parse_data, wire.parse_ack, wire.parse_control):
        try:
            parse(garbage)
        except wire.WireError:
            pass


@given(st.integers(0, 2000), st.integers(0, 7))
def test_any_flipped_bit_is_caught(position, bit):
    datagram = bytearray(wire.DataEncoder(TID).encode(5, b"p" * 1000))
    position %= len(datagram)
    datagram[position] ^= 1 << bit
    with pytest.raises(wire.WireError):
        wire.parse_header(bytes(datagram))


def test_truncation_is_caught():
    datagram = wire.DataEncoder(TID).encode(5, b"p" * 1000)
    for cut in (1, 10, 999, 1000, 1010):
        with pytest.raises(wire.WireError):
            wire.parse_header(datagram[:-cut])
        with pytest.raises(wire.WireError):
            wire.parse_data_datagram(datagram[:-cut])


def test_tid_must_be_32_hex_digits():
    assert wire.tid_to_bytes("00" * 16) == bytes(16)
    for bad in ("", "zz" * 16, "00" * 15, 5, None):
        with pytest.raises(wire.WireError):
            wire.tid_to_bytes(bad)


def test_transfer_meta_from_json():
    good = {"port": 5000, "transfer_id": "ab" * 16, "size": 10, "sha256": "0" * 64}
    assert TransferMeta.from_json(good).to_json() == good
    for change in ({"port": 0}, {"port": True}, {"size": -1}, {"sha256": "A" * 64}, {"transfer_id": "x"}):
        with pytest.raises(BadTransferMeta):
            TransferMeta.from_json({**good, **change})
    with pytest.raises(BadTransferMeta, match="missing size"):
        TransferMeta.from_json({k: v for k, v in good.items() if k != "size"})


# -- RTT (RFC 6298) ------------------------------------------------------------------------------


def test_rto_before_and_after_the_first_sample():
    rtt = RttEstimator(initial_rto=1.0, min_rto=0.2, max_rto=60)
    assert rtt.rto == 1.0
    rtt.sample(0.1)  # SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR
    assert rtt.srtt == pytest.approx(0.1) and rtt.rttvar == pytest.approx(0.05)
    assert rtt.rto == pytest.approx(0.3)
    rtt.sample(0.2)  # RTTVAR = 3/4*0.05 + 1/4*|0.1-0.2|, SRTT = 7/8*0.1 + 1/8*0.2
    assert rtt.rttvar == pytest.approx(0.0625)
    assert rtt.srtt == pytest.approx(0.1125)
    assert rtt.rto == pytest.approx(0.1125 + 4 * 0.0625)


def test_rto_floor_ceiling_and_backoff():
    rtt = RttEstimator(initial_rto=1.0, min_rto=0.2, max_rto=5.0)
    rtt.sample(0.001)
    assert rtt.rto == 0.2  # floor
    rtt.backoff()
    assert rtt.rto == 0.4
    rtt.backoff()
    rtt.backoff()
    rtt.backoff()
    rtt.backoff()
    assert rtt.rto == 5.0  # ceiling
    rtt.sample(0.001)  # a fresh sample clears the backoff
    assert rtt.rto == 0.2


# -- congestion ----------------------------------------------------------------------------------


def test_aimd_slow_start_avoidance_loss_and_timeout():
    cc = Aimd(initial=4, minimum=2, maximum=100)
    cc.on_ack(4)
    assert cc.cwnd == 8  # slow start doubles per round trip
    cc.on_loss()
    assert cc.cwnd == 4 and cc.ssthresh == 4
    cc.on_ack(4)
    assert cc.cwnd == pytest.approx(5)  # +1 per round trip
    cc.on_timeout()
    assert cc.cwnd == 2
    for _ in range(1000):
        cc.on_ack(50)
    assert cc.cwnd == 100  # capped


# -- windows and buffers ------------------------------------------------------------------------


def test_window_fits_the_receive_buffer():
    # Measured here: a 208 KiB default buffer holds six 32 KB datagrams, 92 of 1,200 bytes.
    assert window_for(212992, 32768, 4096) <= 6
    assert window_for(212992, 1200, 4096) <= 92
    assert 2000 < window_for(8 * 1024 * 1024, 1200, 4096) <= 3640 * 0.75  # busy sockets free memory late
    assert estimate_truesize(8192 + 58) >= 16644


# -- config -------------------------------------------------------------------------------------


def test_transfer_section_defaults_and_strictness():
    schema = Schema((SECTION,))
    config = schema.validate({})
    assert config["transfer"].chunk_size == 1200
    assert config["transfer"] == TransferConfig()
    assert schema.validate({"transfer": {"chunk_size": 32768}})["transfer"].chunk_size == 32768
    with pytest.raises(ConfigError, match="chunk_size"):
        schema.validate({"transfer": {"chunk_size": 70000}})
    with pytest.raises(ConfigError, match="chunk_sise"):
        schema.validate({"transfer": {"chunk_sise": 1200}})
    with pytest.raises(ConfigError, match="interface"):
        schema.validate({"transfer": {"interface": "localhost"}})


def test_socket_buffer_keys_have_one_name_in_every_section():
    """``receive_buffer`` as in ``[server]`` and ``[cluster]``; the old ``recv_buffer`` is refused."""
    schema = Schema((SECTION,))
    assert schema.validate({"transfer": {"receive_buffer": 1 << 20}})["transfer"].receive_buffer == 1 << 20
    with pytest.raises(ConfigError, match="recv_buffer"):
        schema.validate({"transfer": {"recv_buffer": 1 << 20}})


# -- batched sends -------------------------------------------------------------------------------


class FakeSocket:
    def __init__(self, gso: bool):
        self.gso = gso
        self.calls = []

    def sendmsg(self, buffers, ancillary, flags, addr):
        if ancillary and not self.gso:
            raise OSError(errno.EIO, "no GSO here")
        self.calls.append((b"".join(buffers), bool(ancillary)))


class FakeTransport:
    def __init__(self, gso: bool):
        self.socket = FakeSocket(gso)


def _batch():
    return [(b"h%d" % i, memoryview(b"p" * 10)) for i in range(5)]


def test_batches_go_in_one_gso_call():
    from twisted.internet import task

    manager = TransferManager(task.Clock(), listen=lambda p: None)
    transport = FakeTransport(gso=True)
    send, batched = manager._make_batch_sender(transport, None)
    assert batched
    send(_batch(), ("127.0.0.1", 9))
    assert transport.socket.calls == [(b"".join(h + bytes(p) for h, p in _batch()), True)]


def test_a_kernel_without_gso_falls_back_to_one_call_per_datagram_for_good():
    from twisted.internet import task

    manager = TransferManager(task.Clock(), listen=lambda p: None)
    transport = FakeTransport(gso=False)
    send, _ = manager._make_batch_sender(transport, None)
    send(_batch(), ("127.0.0.1", 9))
    send(_batch(), ("127.0.0.1", 9))
    assert [gso for _, gso in transport.socket.calls] == [False] * 10
    assert not manager._gso_ok
    assert manager._make_batch_sender(FakeTransport(gso=True), None)[1] is False
