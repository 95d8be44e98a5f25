"""Client-to-client messages: format, signatures, the UDP listener and acknowledged delivery.

A peer message is one JSON datagram (at most ``MAX_MESSAGE`` bytes)::

    {"v": 1, "type": "share_request", "id": "<32 hex>", "from": "alice", "to": "bob",
     "at": 1732560000.5, "body": {...}, "sig": "<base64 Ed25519 signature>"}

The signature covers the canonical JSON (sorted keys, no spaces) of every
field but ``sig``, made with the sender's Ed25519 key; the receiver checks it
against the key the directory has registered for ``from`` and drops the
message unless ``to`` is its own user. The same signed envelope travels
through the directory's queue when the receiver is offline, so a queued
message is verified exactly like a direct one.

Delivery: every message but ``ack`` is answered by a signed ``ack`` naming its
id, sent only *after* the receiver has applied it; the sender retransmits the
same datagram until the ack arrives or ``timeout`` passes, and the caller then
falls back to the directory's queue. The receiver applies each id at most
once (the application keeps the applied ids), so a retransmission or a copy
that came both ways is harmless.

``PeerProtocol`` only frames: it decodes and hands valid messages to the
``PeerMessenger``; it never raises out of ``datagramReceived``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from cloudp2p.client.checks import MAX_VIEWS, valid_username
from cloudp2p.client.errors import PeerMessageError
from cloudp2p.client.identity import b64, unb64, verify
from cloudp2p.encryption.keys import UserKeys

VERSION = 1
MAX_MESSAGE = 16 * 1024
MAX_IN_PROGRESS = 64  # messages being verified/applied at once; more are dropped (the sender retries)

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def valid_image_id(value: Any) -> bool:
    """An image id as the cloud makes them: a canonical lower-case UUID (safe in a file name)."""
    return isinstance(value, str) and _UUID.match(value) is not None


# -- body checks ------------------------------------------------------------------------------------


def _str_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise PeerMessageError(f"{what} must be a short identifier")
    return value


def _image_id(value: Any) -> str:
    if not valid_image_id(value):
        raise PeerMessageError("image_id must be a lower-case UUID")
    return value


def _text(value: Any, what: str, limit: int = 200) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise PeerMessageError(f"{what} must be a string of 1 to {limit} characters")
    return value


def _views(value: Any, what: str = "views", low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_VIEWS:
        raise PeerMessageError(f"{what} must be a whole number from {low} to {MAX_VIEWS}")
    return value


def _transfer(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != {"port", "transfer_id", "size", "sha256"}:
        raise PeerMessageError("transfer must be {port, transfer_id, size, sha256}")
    port, size, sha = value["port"], value["size"], value["sha256"]
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise PeerMessageError("transfer port out of range")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= 1 << 31:
        raise PeerMessageError("transfer size out of range")
    if not isinstance(sha, str) or not re.match(r"^[0-9a-f]{64}$", sha):
        raise PeerMessageError("transfer sha256 must be 64 hex digits")
    _str_id(value["transfer_id"], "transfer_id")
    return value


def _check_ack(b: dict[str, Any]) -> None:
    _exact(b, {"ack"})
    if not isinstance(b["ack"], str) or not _HEX32.match(b["ack"]):
        raise PeerMessageError("ack must name a message id")


def _check_request(b: dict[str, Any]) -> None:
    _exact(b, {"request_id", "image_id", "views", "kind", "used"})
    _str_id(b["request_id"], "request_id")
    _image_id(b["image_id"])
    _views(b["views"])
    _views(b["used"], "used", low=0)
    if b["kind"] not in ("share", "more"):
        raise PeerMessageError("kind must be 'share' or 'more'")


def _check_offer(b: dict[str, Any]) -> None:
    _exact(b, {"request_id", "image_id", "image_name", "views", "transfer"})
    _str_id(b["request_id"], "request_id")
    _image_id(b["image_id"])
    _text(b["image_name"], "image_name")
    _views(b["views"])
    _transfer(b["transfer"])


def _check_rejected(b: dict[str, Any]) -> None:
    _exact(b, {"request_id", "image_id"})
    _str_id(b["request_id"], "request_id")
    _image_id(b["image_id"])


def _check_done(b: dict[str, Any]) -> None:
    _exact(b, {"request_id", "image_id"})
    _str_id(b["request_id"], "request_id")
    _image_id(b["image_id"])


def _check_rights(b: dict[str, Any]) -> None:
    _exact(b, {"image_id", "views", "rights", "reason"})
    _image_id(b["image_id"])
    _views(b["views"], low=0)
    if not isinstance(b["rights"], str) or len(b["rights"]) > 8192:
        raise PeerMessageError("rights must be a string of at most 8192 characters")
    if b["reason"] not in ("more", "set", "revoke"):
        raise PeerMessageError("reason must be 'more', 'set' or 'revoke'")


def _exact(body: dict[str, Any], keys: set[str]) -> None:
    if set(body) != keys:
        raise PeerMessageError(f"body must have exactly the keys {sorted(keys)}, got {sorted(body)}")


BODY_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "ack": _check_ack,
    "share_request": _check_request,
    "share_offer": _check_offer,
    "share_rejected": _check_rejected,
    "share_done": _check_done,
    "rights_update": _check_rights,
}


# -- the message -------------------------------------------------------------------------------------


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def new_message_id() -> str:
    return os.urandom(16).hex()


@attrs.frozen
class PeerMessage:
    type: str
    id: str
    sender: str
    recipient: str
    at: float
    body: dict[str, Any]
    signature: bytes = b""

    def _unsigned(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "type": self.type,
            "id": self.id,
            "from": self.sender,
            "to": self.recipient,
            "at": self.at,
            "body": self.body,
        }

    def signed_bytes(self) -> bytes:
        return _canonical(self._unsigned())

    def signed_by(self, identity: UserKeys) -> PeerMessage:
        return attrs.evolve(self, signature=identity.sign(self.signed_bytes()))

    def verify(self, public_ed25519_b64: str) -> bool:
        return bool(self.signature) and verify(public_ed25519_b64, self.signature, self.signed_bytes())

    def to_json(self) -> dict[str, Any]:
        obj = self._unsigned()
        obj["sig"] = b64(self.signature)
        return obj

    def encode(self) -> bytes:
        data = _canonical(self.to_json())
        if len(data) > MAX_MESSAGE:
            raise PeerMessageError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
        return data

    @classmethod
    def create(
        cls, identity: UserKeys, type: str, sender: str, recipient: str, body: dict[str, Any], at: float
    ) -> PeerMessage:
        check = BODY_CHECKS.get(type)
        if check is None:
            raise PeerMessageError(f"unknown message type {type!r}")
        check(body)
        msg = cls(type, new_message_id(), sender, recipient, float(at), body)
        return msg.signed_by(identity)

    @classmethod
    def decode(cls, data: bytes) -> PeerMessage:
        """Parse and validate one datagram; raises ``PeerMessageError`` for anything malformed."""
        if len(data) > MAX_MESSAGE:
            raise PeerMessageError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise PeerMessageError("not UTF-8 JSON") from None
        except RecursionError:  # "[[[[...": json nests by recursion
            raise PeerMessageError("JSON nested too deeply") from None
        return cls.from_json(obj)

    @classmethod
    def from_json(cls, obj: Any) -> PeerMessage:
        if not isinstance(obj, dict):
            raise PeerMessageError("not a JSON object")
        if obj.get("v") != VERSION:
            raise PeerMessageError(f"unsupported version {obj.get('v')!r}")
        expected = {"v", "type", "id", "from", "to", "at", "body", "sig"}
        if set(obj) != expected:
            raise PeerMessageError(f"fields must be exactly {sorted(expected)}")
        mtype, mid, sender, recipient, at, body = (obj[k] for k in ("type", "id", "from", "to", "at", "body"))
        check = BODY_CHECKS.get(mtype) if isinstance(mtype, str) else None
        if check is None:
            raise PeerMessageError(f"unknown message type {mtype!r}")
        if not isinstance(mid, str) or not _HEX32.match(mid):
            raise PeerMessageError("id must be 32 lowercase hex digits")
        if not valid_username(sender) or not valid_username(recipient):
            raise PeerMessageError("from/to must be user names")
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at) or at < 0:
            raise PeerMessageError("at must be a timestamp")
        if not isinstance(body, dict):
            raise PeerMessageError("body must be an object")
        check(body)
        try:
            sig = unb64(obj["sig"], length=64)
        except ValueError as e:
            raise PeerMessageError(f"sig: {e}") from None
        return cls(mtype, mid, sender, recipient, float(at), body, sig)


# -- the listener ----------------------------------------------------------------------------------------


class PeerProtocol(DatagramProtocol):
    """Frames peer datagrams: decode, then hand to ``messenger.received(msg, addr)``."""

    log = Logger()
    maxPacketSize = MAX_MESSAGE + 1024  # larger datagrams are read whole, then refused by size

    def __init__(self, messenger: PeerMessenger) -> None:
        self.messenger = messenger
        self.received = 0  # every datagram, good or bad
        self.rejected = 0

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received += 1
        try:
            msg = PeerMessage.decode(data)
        except PeerMessageError as e:
            self.rejected += 1
            self.log.info("dropped a malformed peer datagram from {addr}: {why}", addr=addr, why=e.detail)
            return
        except Exception:  # a bug in decoding: count it, log it, keep listening
            self.rejected += 1
            self.log.failure("decoding a peer datagram from {addr} failed", addr=addr)
            return
        try:
            self.messenger.received(msg, (addr[0], addr[1]))
        except Exception:
            self.log.failure("peer message from {addr} could not be handled", addr=addr)

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is None:
            return
        try:
            self.transport.write(data, addr)
        except OSError as e:
            self.log.info("could not send a peer datagram to {addr}: {why}", addr=addr, why=e)


KeyResolver = Callable[[str], Awaitable[str | None]]
Deliver = Callable[[PeerMessage, tuple[str, int]], Awaitable[None]]
Admit = Callable[[PeerMessage, tuple[str, int]], bool]


class PeerMessenger:
    """Signed, acknowledged message exchange over a ``PeerProtocol``.

    ``resolve_key(username)`` returns the user's registered Ed25519 key (base64)
    or None; ``deliver(msg, addr)`` applies a verified message (and must be
    idempotent per ``msg.id``); the ack goes back once it returns.
    ``admit(msg, addr)`` is asked first, synchronously, before any work (a key
    lookup, a signature check) is spent on a datagram anyone could have sent.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        identity: UserKeys,
        username: Callable[[], str | None],
        resolve_key: KeyResolver,
        deliver: Deliver,
        *,
        retry_interval: float = 0.25,
        admit: Admit | None = None,
    ) -> None:
        self.reactor = reactor
        self.identity = identity
        self.username = username
        self.resolve_key = resolve_key
        self.deliver = deliver
        self.retry_interval = retry_interval
        self.admit = admit or (lambda msg, addr: True)
        self.protocol = PeerProtocol(self)
        self._waiting: dict[str, tuple[str, defer.Deferred[bool]]] = {}
        self._in_progress: set[str] = set()
        self.dropped = 0

    def message(self, type: str, recipient: str, body: dict[str, Any]) -> PeerMessage:
        me = self.username()
        if me is None:
            raise PeerMessageError("not signed in")
        return PeerMessage.create(self.identity, type, me, recipient, body, self.reactor.seconds())

    async def send(self, msg: PeerMessage, addr: tuple[str, int], timeout: float) -> bool:
        """Send until acknowledged; True if the peer acked within ``timeout`` seconds."""
        data = msg.encode()
        done: defer.Deferred[bool] = defer.Deferred()
        self._waiting[msg.id] = (msg.recipient, done)
        deadline = self.reactor.seconds() + timeout

        def attempt() -> None:
            if done.called:
                return
            if self.reactor.seconds() >= deadline:
                done.callback(False)
                return
            self.protocol.send(data, addr)
            self.reactor.callLater(self.retry_interval, attempt)

        attempt()
        try:
            return await done
        finally:
            self._waiting.pop(msg.id, None)

    def received(self, msg: PeerMessage, addr: tuple[str, int]) -> None:
        if msg.recipient != self.username():
            self.dropped += 1
            self.log.info("dropped a peer message for {to} (I am {me})", to=msg.recipient, me=self.username())
            return
        if msg.type == "ack":
            waiting = self._waiting.get(msg.body["ack"])
            if waiting is None or waiting[0] != msg.sender:
                return
            defer.Deferred.fromCoroutine(self._check_ack(msg, waiting[1]))
            return
        if msg.id in self._in_progress:
            return
        if len(self._in_progress) >= MAX_IN_PROGRESS:
            self.dropped += 1
            self.log.info(
                "dropped a {type} message from {sender}: too many being checked",
                type=msg.type,
                sender=msg.sender,
            )
            return
        if not self.admit(msg, addr):
            self.dropped += 1
            return
        self._in_progress.add(msg.id)
        d = defer.Deferred.fromCoroutine(self._apply(msg, addr))
        d.addBoth(lambda _: self._in_progress.discard(msg.id))

    async def _check_ack(self, msg: PeerMessage, done: defer.Deferred[bool]) -> None:
        if await self._verified(msg) and not done.called:
            done.callback(True)

    async def _verified(self, msg: PeerMessage) -> bool:
        try:
            key = await self.resolve_key(msg.sender)
        except Exception as e:
            self.log.info("cannot check {sender}'s signature now: {why}", sender=msg.sender, why=e)
            return False
        if key is None or not msg.verify(key):
            self.dropped += 1
            self.log.warn(  # noqa: G010
                "dropped a {type} message claiming to be from {sender}: bad signature",
                type=msg.type,
                sender=msg.sender,
            )
            return False
        return True

    async def _apply(self, msg: PeerMessage, addr: tuple[str, int]) -> None:
        if not await self._verified(msg):
            return
        try:
            await self.deliver(msg, addr)
        except Exception:
            self.log.failure(
                "applying {type} {id} from {sender} failed", type=msg.type, id=msg.id, sender=msg.sender
            )
            return
        try:
            ack = self.message("ack", msg.sender, {"ack": msg.id})
        except PeerMessageError:
            return
        self.protocol.send(ack.encode(), addr)
