"""fetch_to_file resumes from what an interrupted attempt already received."""

from __future__ import annotations

import json
import random

from cloudp2p.transfer import TransferAborted, TransferTimeout

from .helpers import HOST_A, HOST_B, failure_of, fetch_offer_to_file, manager, pair, run


def test_interrupted_fetch_resumes_from_the_part_file_when_both_sides_are_back(tmp_path):
    net, a, b = pair(max_window=32)
    data = random.Random(3).randbytes(1_000_000)
    chunks = -(-len(data) // 1200)
    offer = a.offer(data)
    target = tmp_path / "shared.png"
    d, progress = fetch_offer_to_file(b, offer, target)
    net.run(10.0, until=lambda: bool(progress) and progress[-1] >= len(data) // 2)
    net.partition({HOST_A}, {HOST_B})  # both sides lose each other (say the sender's process dies)
    failure, _ = failure_of(net, d)
    assert failure.check(TransferTimeout)
    state = json.loads((tmp_path / "shared.png.part.json").read_text())
    assert state["sha256"] == offer.sha256 and state["size"] == len(data)
    assert not target.exists()

    # Both sides come back: a restarted sender offers the same bytes on a new port with a new id.
    net.heal()
    a2 = manager(net, HOST_A, node="a-restarted", max_window=32)
    offer2 = a2.offer(data)
    sent = []
    net.filters.append(
        lambda src, dst, dg: src == (HOST_A, offer2.port) and len(dg) > 100 and sent.append(1) and False
    )
    path = run(
        net, b.fetch_to_file(target, (HOST_A, offer2.port), offer2.transfer_id, offer2.size, offer2.sha256)
    )
    assert path == str(target)
    assert target.read_bytes() == data
    assert len(sent) <= chunks * 0.6, f"{len(sent)} chunks sent again out of {chunks}"
    assert not (tmp_path / "shared.png.part").exists()
    assert not (tmp_path / "shared.png.part.json").exists()


def test_stale_or_foreign_part_state_is_ignored(tmp_path):
    net, a, b = pair()
    data = random.Random(4).randbytes(50_000)
    target = tmp_path / "x.bin"
    (tmp_path / "x.bin.part").write_bytes(b"junk" * 100)
    (tmp_path / "x.bin.part.json").write_text('{"version": 1, "sha256": "00", "size": 3}')
    offer = a.offer(data)
    assert run(
        net, b.fetch_to_file(target, (HOST_A, offer.port), offer.transfer_id, offer.size, offer.sha256)
    )
    assert target.read_bytes() == data


def test_corrupt_part_state_file_is_ignored(tmp_path):
    net, a, b = pair()
    data = random.Random(5).randbytes(50_000)
    target = tmp_path / "y.bin"
    (tmp_path / "y.bin.part.json").write_text("{not json")
    offer = a.offer(data)
    assert run(
        net, b.fetch_to_file(target, (HOST_A, offer.port), offer.transfer_id, offer.size, offer.sha256)
    )
    assert target.read_bytes() == data


def test_a_complete_part_file_finishes_without_the_network(tmp_path):
    net, a, b = pair()
    data = random.Random(6).randbytes(5_000)
    offer = a.offer(data)
    target = tmp_path / "z.bin"
    first = b.fetch_to_file(target, (HOST_A, offer.port), offer.transfer_id, offer.size, offer.sha256)
    assert run(net, first) == str(target)
    # Simulate a crash after the last chunk but before the rename.
    target.rename(tmp_path / "z.bin.part")
    from cloudp2p.transfer.receiver import FileSink

    FileSink(str(target), len(data), offer.sha256).save(1200, bytearray(b"\x01" * 5))
    offer.close()
    again = b.fetch_to_file(target, (HOST_A, offer.port), offer.transfer_id, offer.size, offer.sha256)
    assert run(net, again, 0.1) == str(target)
    assert target.read_bytes() == data


def test_a_restarted_receiver_resumes_from_its_saved_state(tmp_path):
    net, a, b = pair(max_window=32)
    data = random.Random(7).randbytes(1_000_000)
    offer = a.offer(data)
    target = tmp_path / "again.bin"
    d, progress = fetch_offer_to_file(b, offer, target)
    net.run(10.0, until=lambda: bool(progress) and progress[-1] >= len(data) // 2)
    b.stop()  # the client daemon stops: the fetch saves its state
    failure, _ = failure_of(net, d, 0.01)
    assert failure.check(TransferAborted)
    assert (tmp_path / "again.bin.part.json").exists()
    b2 = manager(net, HOST_B, node="b-restarted", max_window=32)
    sent = []
    net.filters.append(
        lambda src, dst, dg: src == (HOST_A, offer.port) and dg[7] == 1 and sent.append(1) and False
    )
    path = run(
        net, b2.fetch_to_file(target, (HOST_A, offer.port), offer.transfer_id, offer.size, offer.sha256)
    )
    assert target.read_bytes() == data and path == str(target)
    assert len(sent) <= 0.6 * -(-len(data) // 1200)
