"""Show the cloud's state as each server sees it.

    python -m cloudp2p.tools.status --servers 127.0.0.1:9101,127.0.0.1:9102,127.0.0.1:9103 [--json]

Each server is asked directly (a ``status`` query over its client socket, no
cluster secret needed) for its coordinator, term, live members, the loads it
knows and the requests it has handled. A server that does not answer is shown
as unreachable; the exit code is 4 (CloudUnreachable) when none answers.

``query(address, op)`` is the blocking helper behind it, also used by the
integration fixtures and the benchmarks outside the reactor.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from typing import Any

from cloudp2p.config import format_hostport, hostport
from cloudp2p.errors import CloudUnreachable, RequestFailed, UsageError, exit_code_for, request_failed
from cloudp2p.routing import client_wire as wire

Address = tuple[str, int]


def query(
    address: Address,
    op: str = "status",
    args: dict[str, Any] | None = None,
    *,
    timeout: float = 1.0,
    attempts: int = 3,
) -> dict[str, Any]:
    """Ask one server ``op`` directly (blocking); the result dict, or RequestFailed / CloudUnreachable.

    A cookie challenge (the server does not know this socket yet) is answered at once by
    sending the query again with the cookie; that does not count as an attempt.
    """
    request = wire.Request(wire.new_request_id(), op, args or {}, direct=True)
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        for _ in range(attempts):
            sock.sendto(request.encode(), address)
            deadline = time.monotonic() + timeout / attempts
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    payload, _ = sock.recvfrom(wire.MAX_DATAGRAM + 1024)
                except TimeoutError:
                    break
                except OSError:  # e.g. ICMP port unreachable surfaced as ECONNREFUSED
                    time.sleep(min(left, 0.05))
                    break
                try:
                    reply = wire.decode_answer(payload)
                except wire.WireError:
                    continue
                if isinstance(reply, wire.CookieChallenge):
                    if request.cookie != reply.cookie:
                        request = request.with_cookie(reply.cookie)
                        sock.sendto(request.encode(), address)
                    continue
                if reply.request_id != request.request_id:
                    continue
                if reply.ok:
                    return reply.body["result"]
                raise request_failed(reply.body["error"]["code"], reply.body["error"]["message"])
    raise CloudUnreachable(f"{format_hostport(address)} did not answer {op!r} within {timeout} s")


def collect(servers: list[Address], timeout: float = 1.0) -> list[tuple[Address, dict[str, Any] | str]]:
    out: list[tuple[Address, dict[str, Any] | str]] = []
    for address in servers:
        try:
            out.append((address, query(address, "status", timeout=timeout)))
        except (CloudUnreachable, RequestFailed, OSError) as e:
            out.append((address, str(e)))
    return out


def render(views: list[tuple[Address, dict[str, Any] | str]]) -> str:
    lines = []
    for address, view in views:
        where = format_hostport(address)
        if isinstance(view, str):
            lines.append(f"{where}: unreachable ({view})")
            continue
        loads = ", ".join(
            f"{m}={'?' if load is None else format(load, '.2f')}" for m, load in sorted(view["loads"].items())
        )
        handled = ", ".join(f"{op}={n}" for op, n in sorted(view["handled_here"].items())) or "none"
        lines.append(
            f"server {view['server']} at {where}: coordinator {view['coordinator']}, term {view['term']}, "
            f"members {view['members']}, loads [{loads}], handled {view['handled_total']} ({handled}), "
            f"pending {view['pending']}, running {view['running']}"
        )
    return "\n".join(lines)


def parse_servers(text: str) -> list[Address]:
    try:
        servers = [hostport(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError as e:
        raise UsageError(f"--servers: {e}") from None
    if not servers:
        raise UsageError("--servers: give at least one host:port")
    return servers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cloudp2p.tools.status", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--servers", required=True, help="comma-separated host:port of the servers' client sockets"
    )
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for each server")
    parser.add_argument("--json", action="store_true", help="print the raw views as JSON")
    ns = parser.parse_args(argv)
    try:
        servers = parse_servers(ns.servers)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return exit_code_for(e)
    views = collect(servers, ns.timeout)
    if ns.json:
        print(json.dumps([{"address": format_hostport(a), "status": v} for a, v in views], indent=2))
    else:
        print(render(views))
    if all(isinstance(v, str) for _, v in views):
        return exit_code_for(CloudUnreachable())
    return 0


if __name__ == "__main__":
    sys.exit(main())
