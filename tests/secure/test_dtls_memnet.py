"""DtlsServer and DtlsClient on the memory network: handshake, messages, and what a stranger gets."""

from __future__ import annotations

import pytest
from twisted.internet.protocol import DatagramProtocol

from cloudp2p.errors import ServerCertificateExpired, ServerNameMismatch, ServerUntrusted
from cloudp2p.secure import records as rec
from cloudp2p.secure.endpoint import DtlsClient, DtlsClientSettings, DtlsServer, DtlsServerSettings
from cloudp2p.secure.tls import ServerRef
from cloudp2p.testing.memnet import MemoryNetwork

SERVER = ("127.0.0.1", 9101)
CLIENT = ("127.0.0.2", 5000)
REF = ServerRef(SERVER, "server1.cloud")


class Inner(DatagramProtocol):
    """Records messages; an echo server when ``echo``."""

    def __init__(self, echo: bool = False) -> None:
        self.got: list[tuple[bytes, tuple[str, int]]] = []
        self.echo = echo

    def datagramReceived(self, data, addr):
        self.got.append((data, addr))
        if self.echo:
            self.transport.write(b"echo:" + data, addr)


def recorder(into, *, to=SERVER, drop=False):
    """A memory-network filter that keeps what is sent to ``to`` (and drops it if ``drop``)."""

    def keep(src, dst, data):
        if dst == to:
            into.append(data)
            return drop
        return False

    return keep


class Raw(DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []

    def datagramReceived(self, data, addr):
        self.got.append(data)


def make_server(net, identity, *, address=SERVER, node="s", **settings):
    inner = Inner(echo=True)
    server = DtlsServer(
        inner,
        certificate=str(identity.certificate),
        key=str(identity.key),
        clock=net.node_clock(node),
        settings=DtlsServerSettings(**settings),
    )
    net.listen(server, address, node=node)
    return server, inner


def make_client(net, ca, refs, *, address=CLIENT, node="c", **settings):
    inner = Inner()
    settings = DtlsClientSettings(**settings)
    client = DtlsClient(inner, refs, ca_file=ca, clock=net.node_clock(node), settings=settings)
    net.listen(client, address, node=node)
    return client, inner


def test_handshake_then_messages_both_ways(test_pki):
    net = MemoryNetwork()
    server, server_inner = make_server(net, test_pki.server1)
    client, inner = make_client(net, test_pki.ca, [REF])
    assert net.run(1.0, until=lambda: client.is_open(SERVER))
    big = bytes(range(256)) * 234  # 59,904 bytes: several records in one datagram
    inner.transport.write(b"hello", SERVER)
    inner.transport.write(big, SERVER)
    net.run(0.1)
    assert [d for d, _ in server_inner.got] == [b"hello", big]
    assert [d for d, _ in inner.got] == [b"echo:hello", b"echo:" + big]
    assert server.counters["hello_verify"] == 1 and server.counters["handshakes_completed"] == 1
    assert server.associations() == 1


def test_message_written_before_the_handshake_waits_for_it(test_pki):
    net = MemoryNetwork()
    make_server(net, test_pki.server1)
    client, inner = make_client(net, test_pki.ca, [REF])
    inner.transport.write(b"early", SERVER)  # the association is still being set up
    net.run(0.5)
    assert [d for d, _ in inner.got] == [b"echo:early"]
    assert client.counters["queued"] == 1


def test_exported_keys_match_per_context(test_pki):
    net = MemoryNetwork()
    server, _ = make_server(net, test_pki.server1)
    client, _ = make_client(net, test_pki.ca, [REF])
    assert net.run(1.0, until=lambda: client.is_open(SERVER))
    a = client.export_key(SERVER, b"transfer-1")
    assert a == server.export_key(CLIENT, b"transfer-1") and len(a) == 32
    assert a != client.export_key(SERVER, b"transfer-2")
    with pytest.raises(LookupError):
        server.export_key(("127.0.0.9", 1), b"transfer-1")


def test_spoofed_client_hello_gets_one_small_answer_and_no_state(test_pki):
    """A ClientHello from an address that never answers: one HelloVerifyRequest, smaller, no association."""
    net = MemoryNetwork()
    server, _ = make_server(net, test_pki.server1)
    hellos = []
    net.filters.append(recorder(hellos, drop=True))
    client, _ = make_client(net, test_pki.ca, [REF])
    net.run(0.05)
    net.filters.clear()
    hello = hellos[0]
    victim = Raw()
    net.listen(victim, ("127.0.0.66", 7), node="victim")
    for _ in range(20):  # as if sent with the victim's address as source
        server.datagramReceived(hello, ("127.0.0.66", 7))
    net.run(0.1)
    assert len(victim.got) == 20 and all(len(d) < len(hello) for d in victim.got)
    assert server.associations() == 0  # the spoofed source cost no state
    assert server.counters["hello_verify"] == 20


def test_garbage_plain_and_unknown_records_are_dropped_and_counted(test_pki):
    net = MemoryNetwork()
    server, server_inner = make_server(net, test_pki.server1)
    stranger = Raw()
    t = net.listen(stranger, ("127.0.0.77", 1), node="x")
    t.write(b'{"v":1,"t":"req","id":"00","op":"ping","args":{}}', SERVER)  # plain JSON on a DTLS port
    t.write(b"\x16\xfe\xfd" + b"\x00" * 8, SERVER)  # a truncated record header
    t.write(b"\x16\xfe\xfd" + b"\x00" * 8 + b"\xff\xff" + b"x" * 10, SERVER)  # length overruns
    t.write(rec.HEADER.pack(rec.HANDSHAKE, rec.DTLS_1_2, 0, bytes(6), 3) + b"\x01\x00\x00", SERVER)
    app = rec.HEADER.pack(rec.APPLICATION_DATA, rec.DTLS_1_2, 1, bytes(6), 40) + bytes(40)
    t.write(app, SERVER)  # protected records for an association it does not have
    t.write(app, SERVER)  # the second one within hint_interval gets no hint
    net.run(0.1)
    c = server.counters
    assert c["not_dtls"] == 3 and c["bad_hello"] == 1 and c["unknown_association"] == 2
    assert c["hints_sent"] == 1 and c["internal"] == 0
    assert stranger.got == [rec.lost_association_hint()] and len(stranger.got[0]) < len(app)
    assert server_inner.got == [] and server.associations() == 0


def test_replayed_record_is_not_delivered_twice(test_pki):
    net = MemoryNetwork()
    server, server_inner = make_server(net, test_pki.server1)
    client, inner = make_client(net, test_pki.ca, [REF])
    assert net.run(1.0, until=lambda: client.is_open(SERVER))
    sent = []
    net.filters.append(recorder(sent))
    inner.transport.write(b"once", SERVER)
    net.run(0.1)
    server.datagramReceived(sent[-1], CLIENT)  # an attacker replays it from the client's address
    net.run(0.1)
    assert [d for d, _ in server_inner.got] == [b"once"]
    assert server.counters["partial"] == 1


def test_limits_per_source_and_in_total(test_pki):
    net = MemoryNetwork()
    server, _ = make_server(net, test_pki.server1, max_per_source=2, max_associations=3)
    clients = []
    for i in range(3):  # three from one IP: the third is refused
        c, _ = make_client(net, test_pki.ca, [REF], address=("127.0.0.2", 5000 + i))
        clients.append(c)
    net.run(0.5)
    assert [c.is_open(SERVER) for c in clients] == [True, True, False]
    assert server.counters["source_limit"] >= 1
    others = [
        make_client(net, test_pki.ca, [REF], address=(f"127.0.0.{3 + i}", 5000))[0]
        for i in range(2)
    ]
    net.run(0.5)
    assert sum(c.is_open(SERVER) for c in others) == 1  # total 3
    assert server.counters["association_limit"] >= 1 and server.associations() == 3


def test_unfinished_handshake_and_idle_association_are_closed(test_pki):
    net = MemoryNetwork()
    server, _ = make_server(
        net, test_pki.server1, handshake_timeout=2.0, idle_timeout=30.0, sweep_interval=1.0
    )

    def second_flight(src, dst, data):  # an unprotected handshake record that is not a ClientHello
        return dst == SERVER and data[0] == rec.HANDSHAKE and rec.epoch(data) == 0 and data[13] != 1

    # The client's second flight never arrives: the server holds a half-open association, then drops it.
    net.filters.append(second_flight)
    client, _ = make_client(net, test_pki.ca, [REF], keepalive=1000.0)
    net.run(1.0)
    net.filters.clear()
    net.advance(0.5)
    net.run(3.0)
    assert server.counters["closed_handshake_timeout"] >= 1
    assert net.run(10.0, until=lambda: client.is_open(SERVER))  # the client tries again and gets in
    net.run(31.0)
    assert server.counters["closed_idle"] == 1 and server.associations() == 0


def test_keepalive_holds_an_idle_association(test_pki):
    net = MemoryNetwork(step=0.05)
    server, _ = make_server(net, test_pki.server1, idle_timeout=30.0, sweep_interval=1.0)
    client, _ = make_client(net, test_pki.ca, [REF], keepalive=10.0)
    net.run(100.0)
    assert server.counters["closed_idle"] == 0 and server.associations() == 1
    assert client.counters["pings_sent"] >= 9 and server.counters["pings_received"] >= 9


@pytest.mark.parametrize(
    ("which", "ca", "name", "error"),
    [
        ("foreign", None, "server1.cloud", ServerUntrusted),
        ("expired", None, "server1.cloud", ServerCertificateExpired),
        ("server2", None, "server1.cloud", ServerNameMismatch),
        ("server1", "other_ca", "server1.cloud", ServerUntrusted),
        ("server1", None, None, ServerNameMismatch),  # no name configured: the IP must be in the SAN
    ],
)
def test_identity_failures_are_refused_with_their_own_error(test_pki, which, ca, name, error):
    net = MemoryNetwork()
    server, server_inner = make_server(net, getattr(test_pki, which))
    client, inner = make_client(net, getattr(test_pki, ca) if ca else test_pki.ca, [ServerRef(SERVER, name)])
    inner.transport.write(b"secret password", SERVER)
    net.run(1.0)
    assert not client.is_open(SERVER)
    got = client.error_for(SERVER)
    assert type(got) is error
    assert "127.0.0.1:9101" in str(got)
    assert server_inner.got == []  # nothing reached the server's inner protocol
    counter = "name_mismatch" if error is ServerNameMismatch else error.__name__
    assert client.counters[counter] >= 1
    net.run(10.0)  # it keeps trying, with a backoff, not in a loop
    assert 3 <= client.counters["handshakes_started"] <= 6
    assert server_inner.got == [] and not client.is_open(SERVER)


def test_ip_address_identity(test_pki):
    net = MemoryNetwork()
    make_server(net, test_pki.by_ip)
    client, _ = make_client(net, test_pki.ca, [ServerRef(SERVER, None)])
    assert net.run(1.0, until=lambda: client.is_open(SERVER))
    assert client.error_for(SERVER) is None


def test_restarted_server_is_found_again_without_losing_later_messages(test_pki):
    net = MemoryNetwork()
    server, _ = make_server(net, test_pki.server1, node="s1")
    client, inner = make_client(net, test_pki.ca, [REF], keepalive=1000.0)
    assert net.run(1.0, until=lambda: client.is_open(SERVER))
    net.crash("s1")  # kill -9: the association is gone with the process
    server2, server2_inner = make_server(net, test_pki.server1, node="s1b")
    inner.transport.write(b"lost", SERVER)  # reaches a server without the association: a hint comes back
    net.run(0.1)
    inner.transport.write(b"after", SERVER)
    net.run(0.5)
    assert client.counters["hints_received"] == 1 and client.counters["rehandshakes"] == 1
    assert [d for d, _ in server2_inner.got] == [b"after"]
    assert [d for d, _ in inner.got] == [b"echo:after"]
    assert server2.counters["hints_sent"] == 1


def test_forged_hints_cost_at_most_one_handshake_per_interval(test_pki):
    net = MemoryNetwork()
    server, _ = make_server(net, test_pki.server1)
    client, inner = make_client(net, test_pki.ca, [REF], rehandshake_interval=1.0)
    assert net.run(1.0, until=lambda: client.is_open(SERVER))
    net.advance(1.0)
    for _ in range(50):
        client.datagramReceived(rec.lost_association_hint(), SERVER)
        net.run(0.01)
    assert client.counters["rehandshakes"] == 1 and client.counters["hints_ignored"] >= 40
    inner.transport.write(b"still fine", SERVER)
    net.run(0.1)
    assert [d for d, _ in inner.got] == [b"echo:still fine"]
