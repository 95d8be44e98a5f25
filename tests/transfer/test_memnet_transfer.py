"""Transfers on the memory network with task.Clock: loss, duplication, reordering, corruption, truncation."""

from __future__ import annotations

import random

import pytest

from cloudp2p.testing.memnet import Faults
from cloudp2p.transfer import wire

from .helpers import HOST_A, fetch_offer, pair, run


def payload(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def test_clean_transfer_and_progress_on_both_sides():
    net, a, b = pair()
    data = payload(400_000)
    sent_progress, recv_progress = [], []
    offer = a.offer(data, progress=lambda done, total: sent_progress.append((done, total)))
    got = run(net, fetch_offer(b, offer, progress=lambda done, total: recv_progress.append((done, total))))
    assert got == data
    net.run(0.5)
    for progress in (sent_progress, recv_progress):
        assert progress[-1] == (len(data), len(data))
        dones = [d for d, _ in progress]
        assert dones == sorted(dones) and len(progress) >= 2
    assert a.stats.sessions_done == 1
    assert b.stats.corrupt == b.stats.malformed == b.stats.foreign == 0


def test_default_chunks_are_at_most_1200_bytes():
    net, a, b = pair()
    sizes = []
    net.filters.append(lambda src, dst, d: sizes.append(len(d)) or False)
    data = payload(30_000)
    assert run(net, fetch_offer(b, a.offer(data))) == data
    assert max(sizes) - wire.DATA_HEADER_SIZE <= 1200


@pytest.mark.parametrize(
    "faults",
    [
        Faults(loss=0.10),
        Faults(duplicate=0.3),
        Faults(jitter=0.02),  # reordering
        Faults(loss=0.1, duplicate=0.1, jitter=0.01),
    ],
    ids=["loss10", "duplicate", "reorder", "mixed"],
)
def test_survives_network_faults(faults):
    net, a, b = pair(seed=3, faults=faults)
    data = payload(200_000)
    offer = a.offer(data)
    assert run(net, fetch_offer(b, offer)) == data
    if faults.loss:
        assert net.stats.dropped > 0
    if faults.duplicate:
        assert net.stats.duplicated > 0


def test_loss_makes_the_sender_retransmit_and_back_off():
    net, a, b = pair(seed=5, faults=Faults(loss=0.10))
    data = payload(300_000)
    offer = a.offer(data)
    d = fetch_offer(b, offer)
    sessions = []
    net.run(
        0.05, until=lambda: bool(offer.sessions) and not sessions.append(next(iter(offer.sessions.values())))
    )
    assert run(net, d) == data
    session = sessions[0]
    assert session.retransmits > 0
    assert session.cc.loss_events > 0


def test_corrupted_datagrams_are_discarded_never_written():
    net, a, b = pair(seed=11, faults=Faults(corrupt=0.05))
    data = payload(200_000)
    assert run(net, fetch_offer(b, a.offer(data))) == data
    assert net.stats.corrupted > 0
    assert a.stats.corrupt + b.stats.corrupt > 0


def test_truncated_final_chunk_is_discarded_then_resent():
    net, a, b = pair()
    data = payload(10_000)  # 9 chunks, the last one 400 bytes
    offer = a.offer(data)
    last = len(data) // 1200
    truncated = []

    def truncate_last(src, dst, datagram):
        if truncated or src[1] != offer.port or len(datagram) < wire.DATA_HEADER_SIZE:
            return False
        if datagram[7] == wire.DATA and int.from_bytes(datagram[24:28], "big", signed=True) == last:
            truncated.append(datagram)
            offer.transport.write(datagram[:-100], dst)  # what the network delivers instead
            return True
        return False

    net.filters.append(truncate_last)
    assert run(net, fetch_offer(b, offer)) == data
    assert truncated and b.stats.corrupt == 1


def test_a_sender_that_serves_other_bytes_fails_the_integrity_check(tmp_path):
    net, a, b = pair()
    data = payload(20_000)
    offer = a.offer(data)
    offer.view = memoryview(payload(20_000, seed=99))  # a broken sender: same meta, other bytes
    target = tmp_path / "image.png"
    d = b.fetch_to_file(target, (HOST_A, offer.port), offer.transfer_id, offer.size, offer.sha256)
    with pytest.raises(Exception) as info:
        run(net, d)
    from cloudp2p.transfer import IntegrityError

    assert isinstance(info.value, IntegrityError)
    assert not target.exists()
    assert not (tmp_path / "image.png.part").exists()
    assert not (tmp_path / "image.png.part.json").exists()


@pytest.mark.parametrize("size", [0, 1, 1199, 1200, 1201, 2400])
def test_edge_sizes(size):
    net, a, b = pair()
    data = payload(size)
    assert run(net, fetch_offer(b, a.offer(data))) == data


def test_large_chunks_on_the_memory_network():
    net, a, b = pair(chunk_size=32768)
    data = payload(500_000)
    assert run(net, fetch_offer(b, a.offer(data))) == data


def test_one_offer_serves_many_fetches_one_after_another_and_at_once():
    net, a, b = pair(max_per_peer=3)
    data = payload(50_000)
    offer = a.offer(data)
    assert run(net, fetch_offer(b, offer)) == data
    assert run(net, fetch_offer(b, offer)) == data  # a re-assigned request fetches again
    ds = [fetch_offer(b, offer) for _ in range(3)]
    for d in ds:
        assert run(net, d) == data
    net.run(1.0)
    assert a.stats.sessions_done == 5
