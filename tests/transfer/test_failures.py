"""Peers that vanish, hostile datagrams, limits, refusals, cancellation, offer lifetimes."""

from __future__ import annotations

import json
import random
import struct
import zlib

import pytest
from twisted.internet.protocol import DatagramProtocol

from cloudp2p.testing.memnet import Faults
from cloudp2p.transfer import (
    BadTransferMeta,
    FileTooLarge,
    TooManyTransfers,
    TransferAborted,
    TransferRefused,
    TransferTimeout,
    wire,
)

from .helpers import FAST, HOST_A, HOST_B, failure_of, fetch_offer, fetch_offer_to_file, manager, pair, run


def payload(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def test_sender_vanishes_mid_transfer_fetch_times_out_in_bounded_time(tmp_path):
    net, a, b = pair(max_window=32)
    data = payload(2_000_000)
    offer = a.offer(data)
    target = tmp_path / "out.bin"
    d, progress = fetch_offer_to_file(b, offer, target)
    net.run(5.0, until=lambda: bool(progress) and progress[-1] > 200_000)
    assert progress and progress[-1] < len(data)
    net.partition({HOST_B})  # the sender is gone
    failure, took = failure_of(net, d)
    assert failure.check(TransferTimeout)
    assert took <= FAST["peer_timeout"] + 1.0
    assert not target.exists()  # nothing partial where the finished file is expected
    assert (tmp_path / "out.bin.part").exists() and (tmp_path / "out.bin.part.json").exists()
    assert b.open_ports() == 0
    # The sender side gives up on its silent receiver too, and the offer stays open for a retry.
    net.run(FAST["peer_timeout"] + 1.0)
    assert not offer.sessions and a.stats.sessions_failed == 1 and not offer.closed


def test_receiver_vanishes_sender_session_ends_and_slot_is_freed():
    net, a, b = pair(max_per_peer=1, max_window=32)
    data = payload(2_000_000)
    offer = a.offer(data)
    d = fetch_offer(b, offer)
    net.run(5.0, until=lambda: bool(offer.sessions) and next(iter(offer.sessions.values())).acked_count > 100)
    net.pause(HOST_B)  # SIGSTOP: the receiver is frozen, its timers stand still
    net.run(FAST["peer_timeout"] + 1.5)
    assert not offer.sessions and a.stats.sessions_failed == 1
    assert not d.called
    net.resume(HOST_B)  # the receiver's overdue watchdog fires: it also sees the silence
    failure, _ = failure_of(net, d)
    assert failure.check(TransferTimeout)
    # The per-peer slot on the sender was released: a new fetch is accepted.
    assert run(net, fetch_offer(b, offer)) == data


def test_fetch_from_nobody_times_out():
    net, a, b = pair()
    d = b.fetch((HOST_A, 4444), "ab" * 16, 10, "0" * 64)
    failure, took = failure_of(net, d)
    assert failure.check(TransferTimeout)
    assert "10.0.0.1:4444" in str(failure.value)
    assert took <= FAST["peer_timeout"] + 1.0
    assert b.open_ports() == 0


class Spoofer(DatagramProtocol):
    maxPacketSize = 65535

    def datagramReceived(self, data, addr):
        pass


def _seal(body: bytes) -> bytes:
    return struct.pack("!I", zlib.crc32(body)) + body


def _data(tid: bytes, seq: int, length: int, payload: bytes) -> bytes:
    return _seal(
        wire.MAGIC + bytes((wire.VERSION, wire.DATA)) + tid + struct.pack("!iH", seq, length) + payload
    )


def test_hostile_datagrams_are_counted_and_dropped_and_the_transfer_survives():
    net, a, b = pair(max_window=32)
    data = payload(1_000_000)
    offer = a.offer(data)
    d = fetch_offer(b, offer)
    net.run(1.0, until=lambda: bool(b._fetches) and next(iter(b._fetches)).state == "RECEIVING")
    fetch = next(iter(b._fetches))
    fetch_addr = (HOST_B, fetch.transport.getHost().port)
    tid = offer.tid
    hostile = [
        _data(tid, 3, 65000, b"x" * 10),  # huge length field
        _data(tid, -5, 1200, b"x" * 1200),  # negative offset
        _data(tid, 10**6, 1200, b"x" * 1200),  # chunk index far past the end
        _data(tid, 2, 1200, b"x" * 700),  # length does not match the payload
        _data(b"\x00" * 16, 2, 1200, b"x" * 1200),  # wrong transfer id
        _data(tid, 2, 1200, b"x" * 1200)[:20],  # truncated header
        b"",
        b"\xff" * 64,  # garbage
        _seal(b"XX" + bytes((1, 1)) + tid + b"\x00" * 6),  # bad magic
        _seal(wire.MAGIC + bytes((9, 1)) + tid + b"\x00" * 6),  # unknown version
        _seal(wire.MAGIC + bytes((1, 77)) + tid),  # unknown type
        _seal(wire.MAGIC + bytes((1, wire.ACCEPT)) + tid + b"{not json"),
    ]
    before = (b.stats.malformed, b.stats.foreign, b.stats.corrupt)
    for datagram in hostile:  # sent from the offer's own address, as a spoofer would
        offer.transport.write(datagram, fetch_addr)
    stranger = net.listen(Spoofer(), ("10.0.0.9", 0), node="mallory")
    stranger.write(_data(tid, 1, 1200, b"y" * 1200), fetch_addr)  # right id, wrong source address
    # The offer's port gets hostile datagrams too.
    a_before = a.stats.malformed + a.stats.foreign + a.stats.corrupt
    offer_addr = (HOST_A, offer.port)
    for datagram in (
        b"\x00" * 3,
        _seal(wire.MAGIC + bytes((1, wire.ACK)) + tid + struct.pack("!IIIiH", 5, 2, 1, 0, 0)),  # high < cum
        _seal(wire.MAGIC + bytes((1, wire.ACK)) + tid + struct.pack("!IIIiH", 0, 9, 1, 0, 200)),  # bad count
        _seal(wire.MAGIC + bytes((1, wire.REQUEST)) + tid + b"[1, 2]"),
        _seal(wire.MAGIC + bytes((1, wire.REQUEST)) + tid + json.dumps({"nonce": 5}).encode()),
        _seal(wire.MAGIC + bytes((1, wire.DATA)) + tid + b"\x00" * 6),
    ):
        stranger.write(datagram, offer_addr)
    net.run(0.05)
    assert not d.called
    after = (b.stats.malformed, b.stats.foreign, b.stats.corrupt)
    assert sum(after) - sum(before) == len(hostile) + 1
    assert b.stats.foreign - before[1] == 2
    assert a.stats.malformed + a.stats.foreign + a.stats.corrupt - a_before == 6
    assert a.stats.sessions_failed == 0
    assert b.stats.internal == a.stats.internal == 0
    assert run(net, d) == data


def test_file_too_large_is_refused_on_both_sides():
    net, a, b = pair(max_file_size=1000)
    with pytest.raises(FileTooLarge):
        a.offer(b"x" * 1001)
    failure, _ = failure_of(net, b.fetch((HOST_A, 5000), "ab" * 16, 1001, "0" * 64))
    assert failure.check(FileTooLarge)
    assert b.open_ports() == 0


def test_bad_meta_is_refused_at_once():
    net, a, b = pair()
    for args in [
        (("not-an-ip", 5), "ab" * 16, 5, "0" * 64),
        ((HOST_A, 0), "ab" * 16, 5, "0" * 64),
        ((HOST_A, 5), "xyz", 5, "0" * 64),
        ((HOST_A, 5), "ab" * 16, -1, "0" * 64),
        ((HOST_A, 5), "ab" * 16, 5, "Z" * 64),
    ]:
        failure, _ = failure_of(net, b.fetch(*args), 0.01)
        assert failure.check(BadTransferMeta)
    assert b.open_ports() == 0


def test_per_peer_limit_on_the_fetching_side():
    net, a, b = pair(max_per_peer=2)
    data = payload(500_000)
    offer = a.offer(data)
    d1, d2 = fetch_offer(b, offer), fetch_offer(b, offer)
    failure, _ = failure_of(net, fetch_offer(b, offer), 0.01)
    assert failure.check(TooManyTransfers) and failure.value.code == "busy"
    assert run(net, d1) == data and run(net, d2) == data
    assert run(net, fetch_offer(b, offer)) == data  # slots come back


def test_per_peer_limit_on_the_offering_side_refuses_with_a_clear_error():
    net, a, b = pair()
    a_small = manager(net, "10.0.0.3", max_per_peer=1)
    data = payload(500_000)
    offer = a_small.offer(data)
    d1 = fetch_offer(b, offer, host="10.0.0.3")
    failure, _ = failure_of(net, fetch_offer(b, offer, host="10.0.0.3"))
    assert failure.check(TooManyTransfers)
    assert "10.0.0.2" in str(failure.value)
    assert a_small.stats.refused == 1
    assert run(net, d1) == data


def test_wrong_size_or_hash_is_refused_by_the_sender():
    net, a, b = pair()
    offer = a.offer(b"hello world")
    failure, _ = failure_of(net, b.fetch((HOST_A, offer.port), offer.transfer_id, 11, "1" * 64))
    assert failure.check(TransferRefused) and failure.value.code == "mismatch"


def test_cancel_stops_the_fetch_and_closes_its_port():
    net, a, b = pair()
    offer = a.offer(payload(1_000_000))
    d = fetch_offer(b, offer)
    net.run(0.05)
    d.cancel()
    failure, _ = failure_of(net, d, 0.01)
    assert failure.check(TransferAborted)
    assert b.open_ports() == 0
    net.run(0.1)
    assert not offer.sessions  # the receiver told the sender (CLOSE)


def test_closing_an_offer_aborts_its_fetches():
    net, a, b = pair()
    offer = a.offer(payload(1_000_000))
    d = fetch_offer(b, offer)
    net.run(0.05)
    closed = []
    offer.when_closed().addCallback(closed.append)
    offer.close()
    assert closed == [offer] and a.open_ports() == 0
    failure, took = failure_of(net, d, 1.0)
    assert failure.check(TransferAborted) and took < 0.1


def test_offer_closes_when_idle_and_after_max_fetches():
    net, a, b = pair()
    idle = a.offer(b"x" * 10, timeout=3.0)
    once = a.offer(b"y" * 10, max_fetches=1)
    assert a.open_ports() == 2
    assert run(net, fetch_offer(b, once)) == b"y" * 10
    net.run(0.5)
    assert once.closed and not idle.closed
    net.run(3.0)
    assert idle.closed and a.open_ports() == 0


def test_stop_closes_everything():
    net, a, b = pair()
    offer = a.offer(payload(1_000_000))
    d = fetch_offer(b, offer)
    net.run(0.05)
    a.stop()
    b.stop()
    assert a.open_ports() == b.open_ports() == 0
    failure, _ = failure_of(net, d, 0.01)
    assert failure.check(TransferAborted)
    with pytest.raises(Exception, match="stopped"):
        a.offer(b"more")


def test_lost_acks_are_recovered_by_the_retransmission_timer():
    net, a, b = pair(seed=2)
    net.set_link_faults(HOST_B, HOST_A, Faults(loss=0.5))
    data = payload(200_000)
    assert run(net, fetch_offer(b, a.offer(data))) == data


def test_a_failing_progress_callback_does_not_break_the_transfer():
    net, a, b = pair()
    data = payload(300_000)

    def broken(done, total):
        raise RuntimeError("the progress bar crashed")

    offer = a.offer(data, progress=broken)
    assert run(net, fetch_offer(b, offer, progress=broken)) == data
    assert a.stats.internal == b.stats.internal == 0


def test_an_address_of_the_other_family_is_refused_at_once():
    net, a, b = pair()
    failure, _ = failure_of(net, b.fetch(("::1", 5000), "ab" * 16, 5, "0" * 64), 0.01)
    assert failure.check(BadTransferMeta) and "0.0.0.0" in str(failure.value)
