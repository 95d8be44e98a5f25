"""A hand-driven UDP client for attack tests and benchmarks: raw bytes in, raw bytes out, counted.

``RawClient`` is a blocking socket that speaks the client wire
(cloudp2p/routing/client_wire.py) by hand, so that a test can send exactly
what an attacker would: a request with a chosen id, a copy of someone else's
datagram, a reply sent back at a server. It counts every byte it sends and
receives, per server, which is what the amplification figures are made of.

``spoof_udp(src, dst, payload)`` sends one UDP datagram whose *source* address
is ``src`` (a raw IP socket; needs root or CAP_NET_RAW; loopback only in the
tests), which is how an attacker makes a server answer someone else.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
import time
from collections import Counter
from typing import Any

Address = tuple[str, int]
MAX_READ = 70_000


def request_bytes(
    op: str,
    args: dict[str, Any] | None = None,
    *,
    rid: str | None = None,
    query: bool = False,
    cookie: str | None = None,
) -> bytes:
    """A request datagram as the wire spells it (compact JSON), with an optional cookie."""
    obj: dict[str, Any] = {
        "v": 1,
        "t": "query" if query else "req",
        "id": rid or secrets.token_hex(16),
        "op": op,
        "args": args or {},
    }
    if cookie is not None:
        obj["cookie"] = cookie
    return json.dumps(obj, separators=(",", ":")).encode()


def parse(data: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


class RawClient:
    """One UDP socket on ``host``; every byte in and out counted per peer address."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sent: Counter[Address] = Counter()  # bytes
        self.received: Counter[Address] = Counter()  # bytes
        self.datagrams_in: Counter[Address] = Counter()
        self.cookies: dict[Address, str] = {}

    @property
    def address(self) -> Address:
        return self.sock.getsockname()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def send(self, data: bytes, addr: Address) -> None:
        self.sock.sendto(data, addr)
        self.sent[addr] += len(data)

    def receive(self, timeout: float, *, until: Any = None) -> list[tuple[bytes, Address]]:
        """Everything that arrives within ``timeout`` s (or until ``until(data, addr)`` is true)."""
        got: list[tuple[bytes, Address]] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(MAX_READ)
            except (TimeoutError, BlockingIOError):
                break
            except OSError:  # ICMP port unreachable from an earlier send
                continue
            addr = (addr[0], addr[1])
            self.received[addr] += len(data)
            self.datagrams_in[addr] += 1
            got.append((data, addr))
            obj = parse(data)
            if obj is not None and isinstance(obj.get("cookie"), str):
                self.cookies[addr] = obj["cookie"]
            if until is not None and until(data, addr):
                break
        return got

    def prove(self, server: Address, timeout: float = 2.0) -> str | None:
        """Get a return-routability cookie from ``server`` (None from a server that issues none)."""
        if server in self.cookies:
            return self.cookies[server]
        self.send(request_bytes("ping", query=True), server)
        self.receive(timeout, until=lambda d, a: a == server)
        return self.cookies.get(server)

    def call(
        self,
        servers: Address | list[Address],
        op: str,
        args: dict[str, Any] | None = None,
        *,
        rid: str | None = None,
        query: bool = False,
        timeout: float = 5.0,
        prove: bool = True,
    ) -> dict[str, Any] | None:
        """One request (the same id to every server given), the first reply or None.

        With ``prove`` the request carries the cookie each server gave this socket, and a
        cookie challenge is answered by sending the request again with it (at most twice).
        """
        targets = [servers] if isinstance(servers[0], str) else list(servers)  # type: ignore[index]
        rid = rid or secrets.token_hex(16)
        for _ in range(3):
            for server in targets:
                cookie = self.cookies.get(server) if prove else None
                self.send(request_bytes(op, args, rid=rid, query=query, cookie=cookie), server)
            found: list[dict[str, Any]] = []
            challenged: list[Address] = []

            def answer(
                data: bytes, addr: Address, found: list = found, challenged: list = challenged
            ) -> bool:
                obj = parse(data)
                if addr not in targets or obj is None:
                    return False
                if obj.get("t") == "rep" and obj.get("id") == rid:
                    found.append(obj)
                    return True
                if obj.get("t") == "cookie":
                    challenged.append(addr)
                    return len(set(challenged)) == len(targets)
                return False

            self.receive(timeout, until=answer)
            if found:
                return found[0]
            if not prove or not challenged:
                return None
        return None

    def result(
        self, servers: Address | list[Address], op: str, args: dict[str, Any] | None = None, **kw: Any
    ) -> Any:
        """The ``result`` of a successful call; AssertionError with the reply otherwise."""
        reply = self.call(servers, op, args, **kw)
        assert reply is not None, f"no reply to {op} from {servers}"
        assert reply["body"]["ok"], f"{op} failed: {reply['body']}"
        return reply["body"]["result"]


def spoof_udp(src: Address, dst: Address, payload: bytes) -> None:
    """Send ``payload`` to ``dst`` in a UDP datagram that claims to come from ``src`` (IPv4, raw socket)."""
    src_ip, dst_ip = socket.inet_aton(src[0]), socket.inet_aton(dst[0])
    udp_len = 8 + len(payload)
    udp = struct.pack("!HHHH", src[1], dst[1], udp_len, 0) + payload  # checksum 0: none (IPv4)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0, 64, socket.IPPROTO_UDP, 0, src_ip, dst_ip
    )
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(header + udp, (dst[0], 0))
