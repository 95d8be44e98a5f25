"""The memory network itself must behave, or every test built on it lies."""

from twisted.internet.protocol import DatagramProtocol

from cloudp2p.testing.memnet import Faults, MemoryNetwork


class Recorder(DatagramProtocol):
    maxPacketSize = 100

    def __init__(self):
        self.got = []

    def datagramReceived(self, data, addr):
        self.got.append((data, addr))


def make_pair(net):
    a, b = Recorder(), Recorder()
    ta = net.listen(a, ("127.0.0.1", 1), node="a")
    tb = net.listen(b, ("127.0.0.1", 2), node="b")
    return a, b, ta, tb


def test_delivers_after_latency():
    net = MemoryNetwork(faults=Faults(latency=0.1))
    a, b, ta, tb = make_pair(net)
    ta.write(b"hi", ("127.0.0.1", 2))
    net.advance(0.05)
    assert b.got == []
    net.advance(0.06)
    assert b.got == [(b"hi", ("127.0.0.1", 1))]


def test_partition_and_heal():
    net = MemoryNetwork()
    a, b, ta, tb = make_pair(net)
    net.partition({"a"}, {"b"})
    ta.write(b"lost", ("127.0.0.1", 2))
    net.run(0.1)
    assert b.got == []
    net.heal()
    ta.write(b"found", ("127.0.0.1", 2))
    net.run(0.1)
    assert [d for d, _ in b.got] == [b"found"]


def test_pause_queues_and_freezes_clock():
    net = MemoryNetwork()
    a, b, ta, tb = make_pair(net)
    clock_b = net.node_clock("b")
    fired = []
    clock_b.callLater(0.5, fired.append, "timer")
    net.pause("b")
    ta.write(b"queued", ("127.0.0.1", 2))
    net.run(1.0)
    assert fired == [] and b.got == []
    net.resume("b")
    assert fired == ["timer"]
    assert [d for d, _ in b.got] == [b"queued"]


def test_loss_duplicate_truncate_are_seeded():
    net = MemoryNetwork(seed=3, faults=Faults(loss=0.5, duplicate=0.5))
    a, b, ta, tb = make_pair(net)
    for i in range(200):
        ta.write(b"%d" % i, ("127.0.0.1", 2))
    ta.write(b"x" * 150, ("127.0.0.1", 2))
    net.run(0.1)
    assert 50 < net.stats.dropped < 150
    assert net.stats.duplicated > 0
    assert all(len(d) <= Recorder.maxPacketSize for d, _ in b.got)


def test_port_zero_allocates_distinct_ports():
    net = MemoryNetwork()
    t1 = net.listen(Recorder())
    t2 = net.listen(Recorder())
    assert t1.getHost().port != t2.getHost().port
    t1.stopListening()
    assert not t1.connected
