"""Loss recovery details: tail-loss probes, spurious timeouts, the window's response to loss."""

from __future__ import annotations

import random

import pytest

from cloudp2p.testing.memnet import Faults
from cloudp2p.transfer import wire
from cloudp2p.transfer.congestion import Aimd

from .helpers import HOST_B, fetch_offer, pair, run


def payload(n: int, seed: int = 9) -> bytes:
    return random.Random(seed).randbytes(n)


def capture_session(net, offer):
    box = []
    net.run(1.0, until=lambda: bool(offer.sessions) and not box.append(next(iter(offer.sessions.values()))))
    return box[0]


def test_lost_tail_is_recovered_by_a_probe_not_a_timeout():
    net, a, b = pair(min_rto=1.0, initial_rto=1.0)
    data = payload(30 * 1200)
    offer = a.offer(data)
    dropped = []

    def drop_last_once(src, dst, datagram):
        if dropped or src[1] != offer.port or datagram[7] != wire.DATA:
            return False
        if int.from_bytes(datagram[24:28], "big", signed=True) == 29:
            dropped.append(1)
            return True
        return False

    net.filters.append(drop_last_once)
    d = fetch_offer(b, offer)
    session = capture_session(net, offer)
    start = net.clock.seconds()
    assert run(net, d) == data
    assert dropped
    assert session.probes >= 1 and session.cc.timeouts == 0
    assert net.clock.seconds() - start < 0.5  # well under the 1 s retransmission timeout


def test_a_stalled_receiver_causes_a_spurious_timeout_that_is_undone():
    net, a, b = pair(max_window=64, min_rto=0.05, initial_rto=0.05)
    data = payload(2_000_000)
    offer = a.offer(data)
    d = fetch_offer(b, offer)
    session = capture_session(net, offer)
    net.run(1.0, until=lambda: session.acked_count > 300)
    net.pause(HOST_B)  # the receiver stalls (SIGSTOP) well past the RTO, nothing is lost
    net.run(0.6)
    assert session.cc.timeouts >= 1
    net.resume(HOST_B)
    assert run(net, d) == data
    assert session.spurious_timeouts >= 1
    # Undone: the duplicates the timeout queued were mostly never sent.
    assert session.retransmits < 64


def test_random_loss_keeps_most_of_the_window_heavy_loss_halves_it():
    light, heavy = Aimd(initial=100, maximum=1000), Aimd(initial=100, maximum=1000)
    for _ in range(20):
        light.on_round(lost=5, sent=100)
        heavy.on_round(lost=60, sent=100)
    light.on_loss()
    heavy.on_loss()
    assert light.cwnd > 95  # about 2.5 % off
    assert heavy.cwnd < 72
    fresh = Aimd(initial=100)
    fresh.on_loss()
    assert fresh.cwnd == 50  # before any measurement, a loss halves the window (Reno)


def test_sender_slows_down_when_the_path_drops_a_lot():
    def median_window(loss):
        net, a, b = pair(seed=4, faults=Faults(loss=loss), max_window=256, peer_timeout=10.0)
        data = payload(3_000_000)
        offer = a.offer(data)
        d = fetch_offer(b, offer)
        session = capture_session(net, offer)
        cwnds = []
        net.run(60, until=lambda: d.called or cwnds.append(session.cc.cwnd))
        assert run(net, d) == data
        later = sorted(cwnds[len(cwnds) // 3 :])
        return later[len(later) // 2], session.cc.loss_events

    clean, clean_losses = median_window(0.0)
    lossy, lossy_losses = median_window(0.3)
    assert clean_losses == 0 and clean == 256  # nothing lost: the receiver's window is the limit
    assert lossy_losses > 0 and lossy < 128  # 30 % lost: the sender keeps well under it


@pytest.mark.parametrize("loss", [0.0, 0.05])
def test_retransmissions_match_the_loss(loss):
    net, a, b = pair(seed=8, faults=Faults(loss=loss))
    data = payload(600_000)
    offer = a.offer(data)
    d = fetch_offer(b, offer)
    session = capture_session(net, offer)
    assert run(net, d) == data
    chunks = session.n
    if loss == 0:
        assert session.retransmits == 0
    else:
        # Roughly one retransmission per lost chunk, not a flood of duplicates.
        assert chunks * loss * 0.5 < session.retransmits < chunks * loss * 3
