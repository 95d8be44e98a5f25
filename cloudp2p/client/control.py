"""The daemon's local control socket: line-delimited JSON over ``unix:DIR/control.sock:mode=600``.

One request per line from the `cloudp2p` command::

    {"id": 1, "cmd": "encrypt", "args": {"path": "/abs/cat.png", "cover": null}}

zero or more progress lines, then exactly one reply line for that id::

    {"id": 1, "progress": {"label": "uploading cat.png", "done": 65536, "total": 180000}}
    {"id": 1, "ok": true, "result": {...}}
    {"id": 1, "ok": false, "error": {"type": "UnknownImage", "code": "unknown_image",
                                     "message": "...", "exit_code": 12}}

Besides the socket file's mode, every connection's peer credentials are read
with ``SO_PEERCRED`` and a process of another uid is told so and disconnected
before it can send anything. Requests on one connection run concurrently and
their replies may interleave; the ids tell them apart.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from cloudp2p.client.errors import ControlProtocolError
from cloudp2p.errors import CloudP2PError, error_json

MAX_LINE = 256 * 1024

Progress = Callable[[str, int, int], None]
Command = Callable[[dict[str, Any], Progress], Awaitable[dict[str, Any]]]


def error_reply(request_id: Any, error: CloudP2PError) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": error_json(error)}


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected UNIX socket (Linux SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


class ControlProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE
    log = Logger()

    def __init__(self, commands: dict[str, Command], allowed_uid: int) -> None:
        self.commands = commands
        self.allowed_uid = allowed_uid
        self.refused = False

    def connectionMade(self) -> None:
        try:
            uid = peer_uid(self.transport.getHandle())
        except (OSError, AttributeError) as e:
            self.log.warn("cannot read the control client's credentials: {why}", why=e)  # noqa: G010
            uid = -1
        if uid != self.allowed_uid:
            self.refused = True
            self.log.warn("refused a control connection from uid {uid}", uid=uid)  # noqa: G010
            err = ControlProtocolError(
                f"connections from uid {uid} are refused; this daemon belongs to uid {self.allowed_uid}"
            )
            self._send(error_reply(None, err))
            self.transport.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        if self.refused:
            return
        try:
            request = json.loads(line.decode("utf-8"))
            if not isinstance(request, dict) or set(request) - {"id", "cmd", "args"}:
                raise ValueError("a request is {id, cmd, args}")
            request_id, cmd, args = request.get("id"), request.get("cmd"), request.get("args", {})
            if not isinstance(request_id, (int, str)) or isinstance(request_id, bool):
                raise ValueError("id must be a number or a string")
            if not isinstance(cmd, str) or not isinstance(args, dict):
                raise ValueError("cmd must be a string and args an object")
        except (UnicodeDecodeError, ValueError, RecursionError) as e:  # deep nesting: RecursionError
            self._count("bad_lines")
            self._send(error_reply(None, ControlProtocolError(f"bad request line: {e}")))
            return
        command = self.commands.get(cmd)
        if command is None:
            self._count("unknown_commands")
            err = ControlProtocolError(f"unknown command {cmd!r}; known: {', '.join(sorted(self.commands))}")
            self._send(error_reply(request_id, err))
            return
        defer.Deferred.fromCoroutine(self._run(request_id, cmd, command, args))

    async def _run(self, request_id: Any, cmd: str, command: Command, args: dict[str, Any]) -> None:
        def progress(label: str, done: int, total: int) -> None:
            self._send({"id": request_id, "progress": {"label": label, "done": done, "total": total}})

        try:
            result = await command(args, progress)
        except CloudP2PError as e:
            self._count("failed")
            self.log.info("{cmd} failed: {error}", cmd=cmd, error=str(e))
            self._send(error_reply(request_id, e))
            return
        except Exception:
            self._count("bugs")
            self.log.failure("{cmd} failed with a bug", cmd=cmd)
            self._send(error_reply(request_id, CloudP2PError("internal error in the daemon; see its log")))
            return
        self._send({"id": request_id, "ok": True, "result": result})

    def lineLengthExceeded(self, line: bytes) -> None:
        self._count("long_lines")
        self._send(error_reply(None, ControlProtocolError(f"request line longer than {MAX_LINE} bytes")))
        self.transport.loseConnection()

    def _count(self, what: str) -> None:
        counters = getattr(getattr(self, "factory", None), "counters", None)
        if counters is not None:
            counters[what] += 1

    def _send(self, obj: dict[str, Any]) -> None:
        if self.transport is None or getattr(self.transport, "disconnected", False):
            return
        self.sendLine(json.dumps(obj, sort_keys=True).encode())


class ControlFactory(Factory):
    def __init__(
        self,
        commands: dict[str, Command],
        allowed_uid: int | None = None,
        *,
        counters: Counter[str] | None = None,
    ) -> None:
        self.commands = commands
        self.allowed_uid = os.getuid() if allowed_uid is None else allowed_uid
        # bad_lines, unknown_commands, long_lines, failed (a command raised), bugs: shown by `status`
        self.counters: Counter[str] = Counter() if counters is None else counters

    def buildProtocol(self, addr: Any) -> ControlProtocol:
        p = ControlProtocol(self.commands, self.allowed_uid)
        p.factory = self
        return p
