"""The router's open boundary on the memory network: cookies, kept replies per source, limits (issue 11)."""

from __future__ import annotations

import json

from cloudp2p.routing import client_wire as wire
from cloudp2p.routing.cookies import CookieJar, derive_key
from cloudp2p.routing.ratelimit import RateLimits
from cloudp2p.routing.router import RouterSettings
from tests.routing.test_router import FakeCluster, client_addr, raw_client, results


class Wall:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_cookies_are_bound_to_the_address_the_key_and_the_time():
    wall = Wall()
    jar = CookieJar(derive_key(b"s" * 20), ttl=60, skew=5, wall=wall)
    cookie = jar.issue(("10.0.0.7", 4000))
    assert len(cookie) <= 32 and jar.valid(cookie, ("10.0.0.7", 4000))
    assert not jar.valid(cookie, ("10.0.0.7", 4001)) and not jar.valid(cookie, ("10.0.0.8", 4000))
    assert CookieJar(derive_key(b"s" * 20), wall=wall).valid(cookie, ("10.0.0.7", 4000))  # same cloud
    assert not CookieJar(derive_key(b"t" * 20), wall=wall).valid(cookie, ("10.0.0.7", 4000))
    issued, mac = cookie.split(".")
    other = "B" if mac[-1] == "A" else "A"
    forged_cookies = (
        f"{int(issued, 16) + 1:x}.{mac}",
        f"0{issued}.{mac}",
        issued,
        f"{issued}.{mac[:-1]}{other}",
    )
    for forged in (*forged_cookies, "", 5, None):
        assert not jar.valid(forged, ("10.0.0.7", 4000)), forged
    wall.now += 61
    assert not jar.valid(cookie, ("10.0.0.7", 4000))


def test_rate_limits_refill_and_stay_bounded():
    now = [0.0]
    limits = RateLimits(3, 2.0, clock=lambda: now[0], max_keys=100)
    assert [limits.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limits.retry_after("a") == 2.0 and limits.allow("b")
    now[0] += 2.0
    assert limits.allow("a") and not limits.allow("a")
    for i in range(1000):
        limits.allow(i)
    assert len(limits) <= 100


def test_an_unproven_source_gets_a_small_challenge_and_no_work():
    c = FakeCluster(3)
    proto, transport = raw_client(c, prove=False)
    request = wire.Request(wire.new_request_id(), "echo", {"x": 1}).encode()
    for sid in c.ids:
        transport.write(request, client_addr(sid))
    c.net.run(0.5)
    assert c.runs == [] and proto.replies == []
    assert len(proto.challenges) == 3 and all(len(d) <= len(request) for d, _ in proto.challenges)
    assert all(r.status()["pending"] == 0 for r in c.routers.values())


def test_the_client_router_proves_its_address_transparently_once():
    c = FakeCluster(3)
    outcomes = c.submit_all("echo", [{"n": i} for i in range(5)])
    c.run_until_answered(outcomes)
    assert [r["args"]["n"] for r in results(outcomes)] == list(range(5))
    challenges = c.client.counters["cookie_challenges"]
    assert 3 <= challenges <= 15
    more = c.submit_all("echo", [{}])
    c.run_until_answered(more)
    assert c.client.counters["cookie_challenges"] == challenges  # fresh cookies ride on the replies


def test_what_is_not_a_request_is_never_answered_even_from_a_proven_source():
    c = FakeCluster(3)
    proto, transport = raw_client(c)
    for data in (
        b"hello",
        json.dumps(
            {"v": 1, "t": "rep", "id": "a" * 32, "server": 1, "body": {"ok": True, "result": {}}}
        ).encode(),
        json.dumps({"v": 1, "t": "cookie", "cookie": proto.cookies[client_addr(1)]}).encode(),
        json.dumps({"v": 1, "op": "echo"}).encode(),
    ):
        transport.write(data, client_addr(1))
    c.net.run(0.3)
    assert proto.replies == [] and proto.challenges == []
    counters = c.routers[1].counters
    assert counters["dropped_not_json"] == 1 and counters["dropped_not_requests"] == 3


def test_a_server_address_is_never_answered():
    c = FakeCluster(3)
    proto, transport = raw_client(c)
    host = transport.transport.getHost()
    c.routers[1].server_addresses = {(host.host, host.port)}  # as if this socket were a server's
    transport.write(wire.Request(wire.new_request_id(), "echo", {}).encode(), client_addr(1))
    transport.write(b"junk", client_addr(1))
    c.net.run(0.3)
    assert proto.replies == [] and proto.challenges == []
    assert c.routers[1].counters["dropped_from_servers"] == 2


def test_a_kept_reply_goes_only_to_the_address_that_sent_the_request():
    c = FakeCluster(3)
    owner, owner_t = raw_client(c)
    thief, thief_t = raw_client(c, host="10.9.9.7")
    request = wire.Request(wire.new_request_id(), "echo", {"secret": "yes"}).encode()
    for sid in c.ids:
        owner_t.write(request, client_addr(sid))
    c.net.run(0.5)
    assert len(owner.replies) == 1 and owner.replies[0][0].ok
    for sid in c.ids:  # the same id from elsewhere: every server says no, with nothing of the reply
        thief_t.write(request, client_addr(sid))
    c.net.run(0.5)
    assert len(thief.replies) == 3
    assert all(r.body["error"]["code"] == "request_id_taken" for r, _ in thief.replies)
    assert "secret" not in json.dumps([r.body for r, _ in thief.replies])
    for sid in c.ids:  # the owner's own retry still gets it, from every server's cache
        owner_t.write(request, client_addr(sid))
    c.net.run(0.5)
    assert len(owner.replies) == 4 and all(r.body == owner.replies[0][0].body for r, _ in owner.replies)
    assert len(c.runs) == 1


def test_a_copy_from_elsewhere_cannot_redirect_a_pending_reply():
    c = FakeCluster(3)
    owner, owner_t = raw_client(c)
    thief, thief_t = raw_client(c, host="10.9.9.7")
    request = wire.Request(wire.new_request_id(), "slow", {"seconds": 1.0}).encode()
    for sid in c.ids:
        owner_t.write(request, client_addr(sid))
    c.net.run(0.2)
    for sid in c.ids:
        thief_t.write(request, client_addr(sid))
    c.net.run(2.0)
    assert [r.ok for r, _ in owner.replies] == [True]
    assert thief.replies and all(not r.ok for r, _ in thief.replies)


def test_the_reply_cache_has_a_byte_budget():
    settings = RouterSettings(max_done_bytes=65_536)
    c = FakeCluster(3, settings=settings)
    outcomes = c.submit_all("echo", [{"pad": "x" * 20_000, "n": i} for i in range(10)])
    c.run_until_answered(outcomes)
    for router in c.routers.values():
        view = router.status()
        assert view["done_bytes"] <= 65_536 and 1 <= view["done_cached"] <= 3, view
        assert router.counters["done_evicted"] >= 7


def test_auth_ops_are_rate_limited_per_source_and_per_user():
    settings = RouterSettings(auth_ops=frozenset({"echo"}), auth_source_burst=3, auth_user_burst=100)
    c = FakeCluster(3, settings=settings)
    outcomes = c.submit_all("echo", [{"n": i} for i in range(5)])
    c.run_until_answered(outcomes)
    got = results(outcomes)
    limited = [r for r in got if not isinstance(r, dict)]
    assert len(limited) == 2 and all(f.value.code == "rate_limited" for f in limited)
    assert all("try again in" in f.value.message for f in limited)
    assert type(limited[0].value).__name__ == "RateLimited"
    settings = RouterSettings(auth_ops=frozenset({"echo"}), auth_source_burst=100, auth_user_burst=2)
    c = FakeCluster(3, settings=settings)
    outcomes = c.submit_all("echo", [{"username": "Alice"}, {"username": "alice"}, {"username": "ALICE"}])
    c.run_until_answered(outcomes)
    assert [isinstance(r, dict) for r in results(outcomes)] == [True, True, False]


def test_error_replies_to_one_source_are_rate_limited():
    c = FakeCluster(3)
    proto, transport = raw_client(c)
    bad = json.dumps({"v": 9, "t": "req", "id": "a" * 32, "op": "echo", "args": {}})
    for _ in range(100):
        transport.write(bad.encode(), client_addr(1))
    c.net.run(0.1)
    assert 15 <= len(proto.replies) <= 25
    assert c.routers[1].counters["error_replies_limited"] >= 75


def test_wire_cookie_fields_round_trip():
    request = wire.Request("a" * 32, "ping", {}, cookie="1.abc")
    assert wire.decode_request(request.encode()) == request
    reply = wire.Reply("a" * 32, {"ok": True, "result": {}}, 1, cookie="2.def")
    assert wire.decode_answer(reply.encode()) == reply
    challenge = wire.CookieChallenge("3.ghi")
    assert wire.decode_answer(challenge.encode()) == challenge
    smallest = wire.Request("a" * 32, "p", {}).encode()
    assert len(wire.CookieChallenge(CookieJar().issue(("255.255.255.255", 65535))).encode()) <= len(smallest)
    for obj in (
        {"v": 1, "t": "cookie"},
        {"v": 1, "t": "cookie", "cookie": 5},
        {"v": 1, "t": "cookie", "cookie": "x", "id": "a" * 32},
    ):
        try:
            wire.decode_answer(json.dumps(obj).encode())
        except wire.WireError:
            continue
        raise AssertionError(obj)
