"""The network targets of ``make fuzz``: hostile input against real daemons on 127.0.0.1.

``Rig`` starts the real processes (3 ``twistd cloudp2p-server``, two
``twistd cloudp2p-client`` daemons alice and bob, and the transfer peer of
``bench.fuzz_transfer_peer``); each ``fuzz_*`` function sends ``count``
generated inputs to one listener within a time budget and returns a
``TargetResult``.

Pacing: UDP listeners are sent to in batches; after each batch the fuzzer reads
the process's own counters (``status``) and waits until it has processed all
but ``window`` of what was sent, so the kernel's socket buffer never overflows
and the inputs really reach the code. What the process counted (rejected,
dropped) before and after is the proof; a listener that stops counting or a
process that dies is a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs

from bench.fuzz_gen import Mutator
from bench.fuzz_replay import Relay, capture_cluster
from cloudp2p.client import identity
from cloudp2p.client.home import Home
from cloudp2p.client.peer import PeerMessage
from cloudp2p.encryption.keys import UserKeys
from cloudp2p.errors import CloudP2PError, CloudUnreachable, RequestFailed
from cloudp2p.membership.messages import Codec, Coordinator, Envelope, Heartbeat
from cloudp2p.routing import client_wire
from cloudp2p.testing.client import ClientProcess
from cloudp2p.testing.cluster import LocalCluster
from cloudp2p.testing.rawudp import parse, request_bytes
from cloudp2p.tools import status as status_tool
from cloudp2p.transfer import wire as twire

Address = tuple[str, int]
UDP_MAX = 65_507
PASSWORD = "fuzz-password-123"


@attrs.define
class TargetResult:
    name: str
    sent: int = 0
    kinds: Counter[str] = attrs.field(factory=Counter)
    rejected: int = 0  # what the process itself counted as refused/dropped
    processed: int = 0  # what the process counted as handled at all (where it can tell)
    alive: bool = False
    answers: bool = False  # a valid request afterwards got the right answer
    seconds: float = 0.0
    failures: list[str] = attrs.field(factory=list)
    extra: dict[str, Any] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["kinds"] = dict(self.kinds)
        return out


class Blaster:
    """A UDP socket on 127.0.0.1 that sends without blocking and drains what comes back."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.setblocking(False)
        self.replies = 0
        self.send_errors = 0

    @property
    def address(self) -> Address:
        return self.sock.getsockname()

    def send(self, data: bytes, addr: Address) -> bool:
        data = data[:UDP_MAX]
        for _ in range(50):
            try:
                self.sock.sendto(data, addr)
                return True
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:  # ECONNREFUSED surfaced from an earlier ICMP error, etc.
                self.send_errors += 1
                return False
        self.send_errors += 1
        return False

    def drain(self, keep: Callable[[bytes, Address], None] | None = None) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(70_000)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            self.replies += 1
            if keep is not None:
                keep(data, addr)

    def wait_for(self, match: Callable[[bytes, Address], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        found = False

        def keep(data: bytes, addr: Address) -> None:
            nonlocal found
            found = found or match(data, addr)

        while time.monotonic() < deadline and not found:
            self.drain(keep)
            time.sleep(0.01)
        return found

    def close(self) -> None:
        self.sock.close()


# How hard the two server sockets are driven: small batches, so that the processed counter
# (read over the status request) keeps up and the kernel drops nothing.
SERVER_SOCKET_PACING = {"batch": 400, "window": 200, "max_wait": 1.0, "batch_bytes": 256 * 1024}


def paced(
    result: TargetResult,
    count: int,
    deadline: float,
    make: Callable[[], tuple[str, bytes]],
    send: Callable[[bytes], None],
    processed: Callable[[], int | None],
    *,
    batch: int,
    window: int,
    drain: Callable[[], None] = lambda: None,
    max_wait: float = 5.0,
    batch_bytes: int = 1 << 20,
) -> None:
    """Send ``count`` inputs in batches, waiting for ``processed()`` to keep up (within ``window``).

    A batch ends after ``batch`` inputs or ``batch_bytes`` bytes, whichever comes
    first, so that large datagrams do not overflow the listener's socket buffer.
    """
    base = processed() or 0
    first = result.sent  # ``result`` may carry inputs sent by an earlier call
    lag_waits = result.extra.get("lag_waits", 0)
    while result.sent < count and time.monotonic() < deadline:
        size = 0
        for _ in range(min(batch, count - result.sent)):
            kind, data = make()
            send(data)
            result.kinds[kind] += 1
            result.sent += 1
            size += len(data)
            if size >= batch_bytes:
                break
        drain()
        wait_until = time.monotonic() + max_wait
        while time.monotonic() < wait_until:
            done = processed()
            if done is not None and done - base >= result.sent - first - window:
                break
            lag_waits += 1
            drain()
            time.sleep(0.005)
    result.extra["lag_waits"] = lag_waits


# -- the rig ----------------------------------------------------------------------------------------------


class Rig:
    """A 3-server cloud (SQLite directory), client daemons alice and bob, and a transfer peer."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.cloud: LocalCluster | None = None
        self.clients: dict[str, ClientProcess] = {}
        self.peer_ports: dict[str, int] = {}
        self.transfer_peer: subprocess.Popen[bytes] | None = None
        self.relays: dict[tuple[int, int], Relay] = {}

    def captured(self) -> list[bytes]:
        return [d for r in self.relays.values() for d in r.captured]

    def start(self) -> None:
        directory = {"backend": "sqlite", "path": os.path.join(self.workdir, "directory.sqlite3")}
        for attempt in range(3):
            self.cloud = LocalCluster(
                os.path.join(self.workdir, f"cloud{attempt}"), 3, overrides={"directory": directory}
            )
            self.relays = capture_cluster(self.cloud, [(2, 1), (3, 1)])  # real traffic to replay at 1
            try:
                self.cloud.start(60.0)
                break
            except CloudP2PError:
                self.cloud.stop()
                for relay in self.relays.values():
                    relay.stop()
                if attempt == 2:
                    raise
        self.cloud.wait_converged(30.0)
        for name in ("alice", "bob"):
            client = ClientProcess(os.path.join(self.workdir, name), servers=self.cloud.client_list)
            client.init()
            client.start()
            self.clients[name] = client
        for name, client in self.clients.items():
            self.peer_ports[name] = client.wait_ready(30.0)
            for args in (("register", name), ("login",)):
                r = client.run(*args, password=PASSWORD)
                if not r.ok:
                    raise CloudP2PError(f"{name}: cloudp2p {' '.join(args)} failed: {r.stderr}")
        self.transfer_log_path = os.path.join(self.workdir, "transfer_peer.log")
        self._transfer_log = open(self.transfer_log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.transfer_peer = subprocess.Popen(
            [sys.executable, "-m", "bench.fuzz_transfer_peer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._transfer_log,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        ready = json.loads(self.transfer_peer.stdout.readline() or b"{}")
        if not ready.get("ready"):
            raise CloudP2PError("the transfer peer did not start")

    def transfer(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.transfer_peer is not None and self.transfer_peer.stdin and self.transfer_peer.stdout
        self.transfer_peer.stdin.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        self.transfer_peer.stdin.flush()
        line = self.transfer_peer.stdout.readline()
        if not line:
            raise CloudP2PError("the transfer peer exited")
        return json.loads(line)

    def server_status(self, sid: int) -> dict[str, Any] | None:
        assert self.cloud is not None
        try:
            return status_tool.query(self.cloud.client_addresses[sid], "status", timeout=2.0)
        except (CloudUnreachable, RequestFailed, OSError):
            return None

    def stop(self) -> None:
        for client in self.clients.values():
            client.stop(grace=5.0)
        if self.transfer_peer is not None:
            if self.transfer_peer.poll() is None:
                self.transfer_peer.kill()
            self.transfer_peer.wait(timeout=10)
            self._transfer_log.close()
        if self.cloud is not None:
            self.cloud.stop()
        for relay in self.relays.values():
            relay.stop()

    def logs(self) -> str:
        parts = []
        for name, client in self.clients.items():
            parts.append(f"----- {name} -----\n{client.tail(20)}")
        if self.cloud is not None:
            for sid, server in self.cloud.servers.items():
                parts.append(f"----- server {sid} -----\n{server.tail(20)}")
        return "\n".join(parts)


def _finish(result: TargetResult, started: float) -> TargetResult:
    result.seconds = round(time.monotonic() - started, 2)
    if not result.alive:
        result.failures.append("the process is not running any more")
    elif not result.answers:
        result.failures.append("the process did not answer a valid request correctly afterwards")
    if result.sent and result.rejected == 0:
        result.failures.append("the process counted nothing as rejected")
    return result


# -- server client socket -----------------------------------------------------------------------------------


def _rid() -> str:
    return secrets.token_hex(16)


# What a client socket counts for datagrams it refuses or drops (cloudp2p/routing/router.py).
CLIENT_SOCKET_REFUSALS = (
    "dropped_not_json",
    "dropped_not_requests",
    "dropped_from_servers",
    "unproven_dropped",
    "cookie_challenges",
    "challenges_limited",
    "bad_requests",
    "unknown_op",
    "error_replies_limited",
    "foreign_copies",
)


def prove(blaster: Blaster, addr: Address, timeout: float = 3.0) -> str:
    """The return-routability cookie ``addr`` gives the blaster's address."""
    found: list[str] = []

    def cookie(data: bytes, source: Address) -> bool:
        obj = parse(data)
        if obj is not None and obj.get("t") == "cookie" and isinstance(obj.get("cookie"), str):
            found.append(obj["cookie"])
            return True
        return False

    blaster.send(request_bytes("ping", query=True), addr)
    if not blaster.wait_for(cookie, timeout):
        raise CloudP2PError(f"{addr} gave no cookie")
    return found[0]


def fuzz_server_client(rig: Rig, count: int, seconds: float, seed: int, sid: int = 1) -> TargetResult:
    """Malformed requests to a server's client socket, most of them from a proven address (with the
    cookie the server gave the fuzzer, so that they reach the request decoder), some without."""
    assert rig.cloud is not None
    started, deadline = time.monotonic(), time.monotonic() + seconds
    result = TargetResult("server_client")
    addr = rig.cloud.client_addresses[sid]
    m = Mutator(seed, max_size=UDP_MAX)
    blaster = Blaster()
    cookie = prove(blaster, addr)
    link = {"port": 9, "transfer_id": "0" * 32, "size": 10, "sha256": "0" * 64}
    seeds_json: list[dict[str, Any]] = [
        {"v": 1, "t": "req", "id": _rid(), "op": "ping", "args": {}},
        {"v": 1, "t": "query", "id": _rid(), "op": "status", "args": {}},
        {"v": 1, "t": "query", "id": _rid(), "op": "encrypt", "args": {}},  # not a query: wrong state
        {"v": 1, "t": "req", "id": _rid(), "op": "sign_in", "args": {"username": "alice", "password": "no"}},
        {"v": 1, "t": "req", "id": _rid(), "op": "lookup_user", "args": {"username": "bob"}},
        {"v": 1, "t": "req", "id": _rid(), "op": "list_online", "args": {"token": "forged"}},
        {"v": 1, "t": "req", "id": _rid(), "op": "heartbeat", "args": {"token": "0" * 43}},
        {
            "v": 1,
            "t": "req",
            "id": _rid(),
            "op": "encrypt",
            "args": {"token": "x", "image": link, "cover": None, "name": "x"},
        },
        {"v": 1, "t": "rep", "id": _rid(), "server": 1, "body": {"ok": True, "result": {}}},
    ]
    for obj in seeds_json[:-1]:
        if m.rng.random() < 0.85:
            obj["cookie"] = cookie
    seeds = [client_wire._dumps(s) for s in seeds_json]
    replays = [seeds[0], seeds[1]]

    def encode(obj: dict[str, Any]) -> bytes:
        if isinstance(obj, dict) and m.rng.random() < 0.5 and "id" in obj:
            obj["id"] = _rid()
        return m.dumps(obj)

    def make() -> tuple[str, bytes]:
        if m.rng.random() < 0.03:
            return "replay", m.rng.choice(replays)
        return m.mutate(
            seeds, limit=client_wire.MAX_PAYLOAD, json_seeds=seeds_json, version_key="v", encode=encode
        )

    polls = 0

    def processed() -> int | None:
        nonlocal polls
        st = rig.server_status(sid)
        polls += 1
        if st is None:
            return None
        return st["counters"].get("datagrams", 0) - 2 * polls  # a poll: a challenge, then the query

    before = rig.server_status(sid) or {"counters": {}}
    paced(
        result,
        count,
        deadline,
        make,
        lambda d: blaster.send(d, addr),
        processed,
        drain=blaster.drain,
        **SERVER_SOCKET_PACING,
    )
    after = rig.server_status(sid) or {"counters": {}}
    cb, ca = before["counters"], after["counters"]
    for key in ("internal_errors", "requests_received", *CLIENT_SOCKET_REFUSALS):
        result.extra[key] = ca.get(key, 0) - cb.get(key, 0)
    if result.extra["internal_errors"]:
        result.failures.append(f"{result.extra['internal_errors']} internal errors on the client socket")
    # Each status poll made one challenge: not the fuzzer's.
    result.rejected = sum(result.extra[k] for k in CLIENT_SOCKET_REFUSALS) - polls - 1
    result.processed = ca.get("datagrams", 0) - cb.get("datagrams", 0) - 2 * (polls + 1)
    result.extra["replies_to_fuzzer"] = blaster.replies
    result.extra["send_errors"] = blaster.send_errors
    result.alive = rig.cloud.servers[sid].alive
    try:
        pong = status_tool.query(addr, "ping", timeout=3.0)
        result.answers = isinstance(pong, dict)
    except CloudP2PError as e:
        result.failures.append(f"ping after fuzzing: {e}")
    blaster.close()
    return _finish(result, started)


# -- server cluster socket --------------------------------------------------------------------------------


def fuzz_server_cluster(rig: Rig, count: int, seconds: float, seed: int, sid: int = 1) -> TargetResult:
    """Forged, malformed and replayed server-to-server datagrams to server ``sid``'s cluster socket.

    Valid-MAC inputs are built with the cluster secret but are each refused by
    the codec before they reach the node (wrong version, wrong field types,
    unknown sender, misdirected, or claiming to come from the server itself):
    an insider with the secret could do anything, the point is that nothing
    malformed gets through. ``captured`` real datagrams are replayed as they were.
    """
    assert rig.cloud is not None
    started, deadline = time.monotonic(), time.monotonic() + seconds
    result = TargetResult("server_cluster")
    addr = rig.cloud.cluster_addresses[sid]
    secret = rig.cloud.secret.encode()
    m = Mutator(seed, max_size=UDP_MAX)
    codec = Codec(secret, members=frozenset(range(1, 1000)))
    forger = Codec(secrets.token_bytes(24), members=frozenset(range(1, 1000)))
    st0 = rig.server_status(sid)
    term = st0["term"] if st0 else 1
    others = [p for p in rig.cloud.servers if p != sid]
    captured = rig.captured()
    result.extra["captured"] = len(captured)

    def env(sender: int, to: int, message: Any, term_: int = term) -> Envelope:
        return Envelope(
            sender=sender,
            recipient=to,
            incarnation=m.rng.randrange(1, 2**40),
            seq=m.rng.randrange(2**31),
            term=term_,
            message=message,
        )

    forged = [
        forger.encode(env(others[0], sid, Coordinator(successors=others), term + 1000)),
        forger.encode(env(others[0], sid, Heartbeat(load=0.0, coordinator=others[0]), term + 1000)),
    ]
    json_seeds = [
        json.loads(
            codec.encode(env(others[0], sid, Heartbeat(load=0.5, coordinator=others[0], successors=others)))[
                :-32
            ]
        ),
        json.loads(codec.encode(env(others[1], sid, Coordinator(successors=others)))[:-32]),
    ]
    authentic_refused = [
        codec.encode(env(99, sid, Coordinator(successors=[99]), term + 1000)),  # unknown peer
        codec.encode(env(others[0], others[1], Coordinator(), term + 1000)),  # misdirected
        codec.encode(env(sid, sid, Coordinator(), term + 1000)),  # claims to be the server itself
    ]
    seeds = forged + authentic_refused + list(captured or [])

    def sign(obj: dict[str, Any]) -> bytes:
        # Valid MAC over a malformed body; ids changed so that it cannot be a member's message.
        if isinstance(obj, dict):
            obj["from"] = m.rng.choice((sid, 99, 0, -1, "1", None, 1.5))
            if m.rng.random() < 0.5:
                obj["to"] = m.rng.choice(others)
        payload = m.dumps(obj)
        return payload + codec._tag(payload)

    def make() -> tuple[str, bytes]:
        r = m.rng.random()
        if captured and r < 0.1:
            return "replay", m.rng.choice(captured)
        if r < 0.2:
            return "forged", forger.encode(
                env(
                    m.rng.choice(others),
                    sid,
                    Coordinator(successors=others),
                    term + m.rng.randrange(1, 10**6),
                )
            )
        if r < 0.3:
            return "authentic_refused", m.rng.choice(authentic_refused)
        kind, data = m.mutate(seeds, limit=65_000, json_seeds=json_seeds, version_key="v", encode=sign)
        return kind, data

    blaster = Blaster()

    def counted(st: dict[str, Any] | None) -> tuple[int, int] | None:
        if st is None:
            return None
        c = st["cluster"]["counters"]
        return sum(c["dropped"].values()), sum(c["received"].values())

    def processed() -> int | None:
        got = counted(rig.server_status(sid))
        return None if got is None else got[0]

    before = rig.server_status(sid)
    b = counted(before) or (0, 0)
    # Received heartbeats from the real peers do not count here: only drops are ours.
    paced(
        result,
        count,
        deadline,
        make,
        lambda d: blaster.send(d, addr),
        processed,
        drain=blaster.drain,
        **SERVER_SOCKET_PACING,
    )
    after = rig.server_status(sid)
    a = counted(after) or b
    result.rejected = a[0] - b[0]
    result.processed = result.rejected
    if before and after:
        db, da = before["cluster"]["counters"]["dropped"], after["cluster"]["counters"]["dropped"]
        result.extra["dropped_by_reason"] = {k: da.get(k, 0) - db.get(k, 0) for k in da}
        result.extra["term_before"], result.extra["term_after"] = before["term"], after["term"]
        result.extra["coordinator_before"] = before["coordinator"]
        result.extra["coordinator_after"] = after["coordinator"]
        if after["term"] != before["term"] or after["coordinator"] != before["coordinator"]:
            result.failures.append(
                f"term/coordinator changed during the fuzzing: {before['term']}/{before['coordinator']} "
                f"-> {after['term']}/{after['coordinator']}"
            )
        if da.get("internal", 0) - db.get("internal", 0) or da.get("handler_error", 0) - db.get(
            "handler_error", 0
        ):
            result.failures.append("internal or handler errors were counted (see the server log)")
    result.alive = rig.cloud.servers[sid].alive
    try:
        converged = rig.cloud.wait_converged(10.0)
        result.answers = converged is not None
    except CloudP2PError as e:
        result.failures.append(f"the cloud did not agree afterwards: {e}")
    blaster.close()
    return _finish(result, started)


# -- client peer listener ------------------------------------------------------------------------------------


def _control_status(client: ClientProcess) -> dict[str, Any] | None:
    r = client.run("status", timeout=30)
    return r.result if r.ok else None


class ControlConnection:
    """A raw connection to a client daemon's control socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.connect()

    def connect(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30.0)
        self.sock.connect(self.path)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(data)

    def read_line(self) -> bytes | None:
        assert self.sock is not None
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def final_replies(self, n: int) -> list[dict[str, Any]]:
        """Read until ``n`` final replies (progress lines skipped)."""
        out = []
        while len(out) < n:
            line = self.read_line()
            if line is None:
                break
            obj = json.loads(line)
            if "progress" not in obj:
                out.append(obj)
        return out

    def call(self, cmd: str, args: dict[str, Any], rid: int = 1) -> dict[str, Any] | None:
        self.send(json.dumps({"id": rid, "cmd": cmd, "args": args}).encode() + b"\n")
        replies = self.final_replies(1)
        return replies[0] if replies else None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def control_counters(conn: ControlConnection) -> dict[str, Any]:
    reply = conn.call("counters", {}, rid=0)
    if not reply or not reply.get("ok"):
        raise CloudP2PError(f"the daemon's counters failed: {reply}")
    return reply["result"]


NO_IMAGE = "00000000-0000-4000-8000-000000000000"  # image ids are UUIDs (issue 11); alice has none


def fuzz_client_peer(rig: Rig, count: int, seconds: float, seed: int) -> TargetResult:
    started, deadline = time.monotonic(), time.monotonic() + seconds
    result = TargetResult("client_peer")
    alice = rig.clients["alice"]
    addr = ("127.0.0.1", rig.peer_ports["alice"])
    bob = identity.load(Home(rig.clients["bob"].home))
    stranger = UserKeys.generate()
    assert bob is not None
    m = Mutator(seed, max_size=UDP_MAX)
    now = time.time()
    link = {"port": 9, "transfer_id": "t" * 8, "size": 10, "sha256": "0" * 64}
    bodies = {
        "share_request": {"request_id": "r1", "image_id": NO_IMAGE, "views": 1, "kind": "share", "used": 0},
        "share_offer": {
            "request_id": "r-unknown",
            "image_id": NO_IMAGE,
            "image_name": "x.png",
            "views": 1,
            "transfer": link,
        },
        "share_rejected": {"request_id": "r-unknown", "image_id": NO_IMAGE},
        "share_done": {"request_id": "r-unknown", "image_id": NO_IMAGE},
        "rights_update": {"image_id": NO_IMAGE, "views": 3, "rights": "AAAA", "reason": "more"},
        "ack": {"ack": "0" * 32},
    }
    valid = [PeerMessage.create(bob, t, "bob", "alice", b, now) for t, b in bodies.items()]
    seeds = [v.encode() for v in valid]
    json_seeds = [v.to_json() for v in valid]
    wrong_recipient = PeerMessage.create(
        bob, "share_done", "bob", "carol", bodies["share_done"], now
    ).encode()
    forged = [PeerMessage.create(stranger, t, "bob", "alice", b, now).encode() for t, b in bodies.items()]

    def make() -> tuple[str, bytes]:
        r = m.rng.random()
        if r < 0.03:
            return "replay", m.rng.choice(seeds)  # applied once; copies are acknowledged again
        if r < 0.08:
            return "forged", m.rng.choice(forged)
        if r < 0.1:
            return "wrong_recipient", wrong_recipient
        return m.mutate(seeds, limit=16 * 1024, json_seeds=json_seeds, version_key="v")

    conn = ControlConnection(os.path.join(alice.home, "control.sock"))
    blaster = Blaster()

    def processed() -> int | None:
        return control_counters(conn)["peer_received"]

    before = control_counters(conn)
    paced(
        result,
        count,
        deadline,
        make,
        lambda d: blaster.send(d, addr),
        processed,
        batch=100,
        window=20,
        drain=blaster.drain,
        max_wait=2.0,
        batch_bytes=96 * 1024,
    )
    time.sleep(0.5)
    after = control_counters(conn)
    result.extra["peer_rejected"] = after["peer_rejected"] - before["peer_rejected"]
    result.extra["peer_dropped"] = after["peer_dropped"] - before["peer_dropped"]
    result.rejected = result.extra["peer_rejected"] + result.extra["peer_dropped"]
    result.processed = after["peer_received"] - before["peer_received"]
    result.alive = alice.alive
    # A valid message afterwards is applied and acknowledged (signed by alice). A request: anyone
    # may send one (a share_done from someone alice never dealt with is not even looked up).
    probe = PeerMessage.create(bob, "share_request", "bob", "alice", bodies["share_request"], time.time())
    blaster.drain()
    for _ in range(3):
        blaster.send(probe.encode(), addr)

        def is_ack(data: bytes, _addr: Address) -> bool:
            try:
                msg = PeerMessage.decode(data)
            except CloudP2PError:
                return False
            return msg.type == "ack" and msg.body.get("ack") == probe.id and msg.sender == "alice"

        if blaster.wait_for(is_ack, 3.0):
            result.answers = True
            break
    conn.close()
    blaster.close()
    return _finish(result, started)


# -- client control socket -----------------------------------------------------------------------------------

# Commands the fuzzer does not send with valid names: they would end the session under test
# (shutdown, logout) or start a desktop viewer (view). Their names still appear mutated.
SPARED_COMMANDS = ("shutdown", "logout", "view")


def fuzz_client_control(rig: Rig, count: int, seconds: float, seed: int) -> TargetResult:
    started, deadline = time.monotonic(), time.monotonic() + seconds
    result = TargetResult("client_control")
    alice = rig.clients["alice"]
    m = Mutator(seed, max_size=UDP_MAX)
    json_seeds: list[dict[str, Any]] = [
        {"id": 1, "cmd": "status", "args": {}},
        {"id": 2, "cmd": "images", "args": {}},
        {"id": 3, "cmd": "inbox", "args": {}},
        {"id": "4", "cmd": "encrypt", "args": {"path": "/nonexistent/cat.png", "cover": None}},
        {"id": 5, "cmd": "accept", "args": {"request_id": "r-unknown"}},
        {"id": 6, "cmd": "reject", "args": {"request_id": "r-unknown"}},
        {"id": 7, "cmd": "publish", "args": {"image": "nope"}},
        {"id": 8, "cmd": "register", "args": {"username": "alice2", "password": "x"}},
        {"id": 9, "cmd": "revoke", "args": {"image": "nope", "user": "bob"}},
        {"id": 10, "cmd": "nonsense", "args": {}},
    ]
    seeds = [json.dumps(s).encode() for s in json_seeds]
    conn = ControlConnection(os.path.join(alice.home, "control.sock"))

    def one_line(data: bytes) -> bytes:
        return data.replace(b"\n", b" ")

    def make() -> tuple[str, bytes]:
        kind, data = m.mutate(seeds, limit=4096, json_seeds=json_seeds, version_key="id")
        return kind, one_line(data)

    before = control_counters(conn)["control"]
    batch = 50
    reconnects = 0
    bugs_replies = 0
    while result.sent < count and time.monotonic() < deadline:
        lines = [make() for _ in range(min(batch, count - result.sent))]
        for kind, _ in lines:
            result.kinds[kind] += 1
        result.sent += len(lines)
        conn.send(b"".join(data + b"\n" for _, data in lines))
        replies = conn.final_replies(len(lines))
        if len(replies) < len(lines):
            result.failures.append(f"{len(lines) - len(replies)} lines got no reply")
            conn.connect()
            reconnects += 1
        for reply in replies:
            if not reply.get("ok") and "internal error" in str(reply.get("error", {}).get("message", "")):
                bugs_replies += 1
        if m.rng.random() < 0.01:  # an overlong line: refused and disconnected
            conn.send(b"{" + b"x" * (300 * 1024) + b"\n")
            conn.final_replies(1)
            result.kinds["overlong_line"] += 1
            result.sent += 1
            conn.connect()
            reconnects += 1
    after = control_counters(conn)["control"]
    for key in ("bad_lines", "unknown_commands", "long_lines", "failed", "bugs"):
        result.extra[key] = after.get(key, 0) - before.get(key, 0)
    result.extra["reconnects"] = reconnects
    result.rejected = sum(result.extra[k] for k in ("bad_lines", "unknown_commands", "long_lines", "failed"))
    result.processed = result.rejected + result.extra["bugs"]
    if result.extra["bugs"] or bugs_replies:
        result.failures.append(f"{result.extra['bugs']} commands failed with a bug (see the daemon log)")
    result.alive = alice.alive
    st = conn.call("status", {}, rid=99)
    result.answers = bool(st and st.get("ok") and st["result"]["me"]["signed_in"])
    conn.close()
    return _finish(result, started)


# -- transfer ports ----------------------------------------------------------------------------------------


def _transfer_counted(rig: Rig) -> int:
    s = rig.transfer("stats")["stats"]
    return s["corrupt"] + s["malformed"] + s["foreign"] + s["refused"] + s["internal"]


def fuzz_transfer_offer(rig: Rig, count: int, seconds: float, seed: int) -> TargetResult:
    """Hostile datagrams to an open offer: bad CRCs, wrong ids, hostile REQUESTs and ACKs in a session."""
    started, deadline = time.monotonic(), time.monotonic() + seconds
    result = TargetResult("transfer_offer")
    meta = rig.transfer("offer", size=64 * 1024)
    addr = ("127.0.0.1", meta["port"])
    tid = bytes.fromhex(meta["transfer_id"])
    m = Mutator(seed, max_size=UDP_MAX)
    request = {
        "nonce": "n1",
        "size": meta["size"],
        "sha256": meta["sha256"],
        "chunk_size": 1024,
        "window": 64,
        "have": [],
    }
    seeds = [
        twire.encode_control(twire.REQUEST, tid, request),
        twire.encode_ack(tid, 3, 40, 64, 5, [(4, 7), (9, 12)]),
        twire.encode_control(twire.CLOSE, tid, {"nonce": "n1", "reason": "x"}),
        twire.encode_data(tid, 0, b"x" * 100),
        twire.encode_control(twire.REQUEST, os.urandom(16), request),
    ]

    def make() -> tuple[str, bytes]:
        r = m.rng.random()
        if r < 0.15:  # a valid CRC around a hostile REQUEST body
            body = m.wrong_type(request) if m.rng.random() < 0.8 else m.random_value()
            try:
                return "wrong_type", twire._seal(twire._prefix(twire.REQUEST, tid) + m.dumps(body))
            except (TypeError, ValueError):
                return "wrong_type", seeds[0]
        if r < 0.3:  # a valid CRC around a hostile ACK (also inside a live session: wrong state)
            fields = [m.rng.choice((0, 1, 5, 2**31 - 1, 2**32 - 1, m.rng.randrange(2**32))) for _ in range(3)]
            n = m.rng.choice((0, 1, 3, 120, 121, 500))
            tail = b"".join(
                twire.RANGE.pack(m.rng.randrange(2**32), m.rng.randrange(2**32)) for _ in range(n)
            )
            body = twire.ACK_FIELDS.pack(*fields, m.rng.randrange(-(2**31), 2**31), n % 65536) + tail
            return "wrong_state", twire._seal(twire._prefix(twire.ACK, tid) + body)
        if r < 0.33:
            return "replay", seeds[0]  # the session's REQUEST again
        if r < 0.36:
            kind = m.rng.choice((0, 7, 9, 255, twire.ACCEPT, twire.REFUSE))
            return "wrong_type", twire._seal(twire._prefix(kind, tid) + b"{}")
        if r < 0.4:
            return "wrong_version", twire._seal(
                twire.MAGIC + bytes((m.rng.choice((0, 2, 255)), 3)) + tid + b"{}"
            )
        return m.mutate(seeds, limit=twire.MAX_CONTROL_SIZE + 1024)

    blaster = Blaster()
    before = _transfer_counted(rig)
    internal_before = rig.transfer("stats")["stats"]["internal"]
    paced(
        result,
        count,
        deadline,
        make,
        lambda d: blaster.send(d, addr),
        lambda: _transfer_counted(rig),
        batch=300,
        window=150 + count // 4,
        drain=blaster.drain,
        max_wait=1.0,
        batch_bytes=256 * 1024,
    )
    time.sleep(0.3)
    stats = rig.transfer("stats")
    result.rejected = _transfer_counted(rig) - before
    result.processed = result.rejected
    result.extra["stats"] = stats["stats"]
    internal = stats["stats"]["internal"] - internal_before
    result.extra["internal"] = internal
    if internal:
        result.failures.append(
            f"{internal} internal errors in the transfer code (see {rig.transfer_log_path})"
        )
    result.alive = rig.transfer_peer is not None and rig.transfer_peer.poll() is None
    # The offer still serves a correct fetch, and the transfer code still works.
    probe = rig.transfer("selftest")
    result.answers = bool(probe.get("ok"))
    blaster.close()
    return _finish(result, started)


def fuzz_transfer_fetch(rig: Rig, count: int, seconds: float, seed: int) -> TargetResult:
    """The fuzzer is the sender of a running fetch: it accepts, then answers with hostile datagrams."""
    started, deadline = time.monotonic(), time.monotonic() + seconds
    result = TargetResult("transfer_fetch")
    m = Mutator(seed, max_size=UDP_MAX)
    sender = Blaster()
    size, cs = 1 << 20, 1024
    fetches = 0
    state: dict[str, Any] = {}

    def start_fetch() -> None:
        nonlocal fetches
        tid = secrets.token_hex(16)
        sha = os.urandom(32).hex()
        reply = rig.transfer("fetch", port=sender.address[1], transfer_id=tid, size=size, sha256=sha)
        fetches += 1
        state.update(tid=bytes.fromhex(tid), tid_hex=tid, fetch_port=reply.get("port"), nonce=None)
        got: dict[str, Any] = {}

        def keep(data: bytes, addr: Address) -> bool:
            try:
                kind, _ = twire.parse_header(data)
                if kind == twire.REQUEST:
                    got["body"], got["addr"] = twire.parse_control(data), addr
                    return True
            except twire.WireError:
                pass
            return False

        if sender.wait_for(keep, 5.0):
            state["nonce"] = got["body"]["nonce"]
            state["addr"] = got["addr"]
            chunks = -(-size // got["body"]["chunk_size"])
            state["accept"] = {
                "nonce": state["nonce"],
                "chunks": chunks,
                "chunk_size": got["body"]["chunk_size"],
            }
            sender.send(twire.encode_control(twire.ACCEPT, state["tid"], state["accept"]), state["addr"])

    start_fetch()
    if state.get("nonce") is None:
        result.failures.append("the fetch never sent its REQUEST")
        return _finish(result, started)

    def seeds() -> list[bytes]:
        tid = state["tid"]
        return [
            twire.encode_data(tid, 0, b"z" * cs),
            twire.encode_data(tid, 1023, b"z" * cs),
            twire.encode_control(twire.ACCEPT, tid, state["accept"]),
            twire.encode_control(twire.REFUSE, os.urandom(16), {"nonce": state["nonce"], "code": "x"}),
            twire.encode_control(twire.CLOSE, os.urandom(16), {"nonce": state["nonce"]}),
        ]

    def make() -> tuple[str, bytes]:
        tid = state["tid"]
        r = m.rng.random()
        if r < 0.3:  # CRC-valid DATA with hostile indices and lengths
            seq = m.rng.choice((-1, -(2**31), 1024, 1025, 2**31 - 1, m.rng.randrange(1024)))
            payload = b"q" * m.rng.choice((0, 1, cs - 1, cs, cs + 1, 4000))
            if seq < 0 or m.rng.random() < 0.5:
                fields = twire.DATA_FIELDS.pack(seq, len(payload) if m.rng.random() < 0.7 else 7)
                return "wrong_state", twire._seal(twire._prefix(twire.DATA, tid) + fields + payload)
            return "wrong_state", twire.encode_data(tid, seq, payload)
        if r < 0.4:  # control bodies of the wrong shape (a REFUSE/ACCEPT with a wrong nonce)
            kind = m.rng.choice((twire.ACCEPT, twire.CLOSE, twire.REFUSE, twire.ACK, twire.REQUEST))
            body = m.wrong_type(state["accept"])
            if isinstance(body, dict) and body.get("nonce") == state["nonce"]:
                body["nonce"] = "other"
            return "wrong_type", twire._seal(twire._prefix(kind, tid) + m.dumps(body))
        return m.mutate(seeds(), limit=twire.MAX_CHUNK_SIZE + 64)

    before = _transfer_counted(rig)
    internal_before = rig.transfer("stats")["stats"]["internal"]
    restarts = 0

    def send(data: bytes) -> None:
        sender.send(data, state["addr"])

    while result.sent < count and time.monotonic() < deadline:
        goal = min(count, result.sent + 5000)
        paced(
            result,
            goal,
            deadline,
            make,
            send,
            lambda: _transfer_counted(rig),
            batch=250,
            window=150 + goal // 4,
            drain=sender.drain,
            max_wait=1.0,
            batch_bytes=256 * 1024,
        )
        outcome = rig.transfer("stats")["fetches"].get(state["tid_hex"])
        if outcome != "running":  # a hostile datagram may legitimately end the fetch: start another
            restarts += 1
            start_fetch()
            if state.get("nonce") is None:
                result.failures.append("a new fetch never sent its REQUEST")
                break
    time.sleep(0.3)
    stats = rig.transfer("stats")
    result.rejected = _transfer_counted(rig) - before
    result.processed = result.rejected
    result.extra["stats"] = stats["stats"]
    result.extra["fetches_started"] = fetches
    result.extra["fetch_outcomes"] = dict(Counter(v.split(":")[0] for v in stats["fetches"].values()))
    internal = stats["stats"]["internal"] - internal_before
    result.extra["internal"] = internal
    if internal:
        result.failures.append(
            f"{internal} internal errors in the transfer code (see {rig.transfer_log_path})"
        )
    result.alive = rig.transfer_peer is not None and rig.transfer_peer.poll() is None
    result.answers = bool(rig.transfer("selftest").get("ok"))
    sender.close()
    return _finish(result, started)


TARGETS: dict[str, Callable[..., TargetResult]] = {
    "server_client": fuzz_server_client,
    "server_cluster": fuzz_server_cluster,
    "client_peer": fuzz_client_peer,
    "client_control": fuzz_client_control,
    "transfer_offer": fuzz_transfer_offer,
    "transfer_fetch": fuzz_transfer_fetch,
}
