"""Server-to-server messages: attrs value objects, their JSON wire form and its authentication.

One message per datagram. A datagram is the UTF-8 JSON of the envelope followed
by a 32-byte HMAC-SHA256 tag computed over those JSON bytes with the cluster
secret::

    {"v": 2, "type": "heartbeat", "from": 2, "to": 3, "inc": 1732550000123456,
     "seq": 17, "term": 5, "echo": 1732550004000000, ...fields of the message...}<32-byte tag>

``from`` is the sender's server id (the identity is the authenticated id, not
the UDP source address), ``to`` the recipient's (so a datagram recorded on its
way to one server cannot be replayed to another), ``inc`` the sender's *incarnation* (a number fixed at
start and larger after every restart) and ``seq`` a counter the sender raises
for every datagram it sends. ``ReplayGuard`` uses the pair to reject a
datagram seen before or sent by an earlier incarnation, so a recorded old
heartbeat cannot resurrect a dead node. ``term`` is the sender's current
election term (see ``election.py``). ``echo`` is the recipient's incarnation as
the sender last saw it in an authenticated datagram (0: none seen yet);
``Freshness`` refuses a datagram that does not echo the receiver's *current*
incarnation, so nothing recorded before the receiver (re)started is accepted
(docs/cluster-membership.md, "Freshness").

``Codec.decode`` raises ``BadMessageError`` (with a ``reason`` the protocol counts)
for anything it does not accept, and never any other exception.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from typing import Any, ClassVar

import attrs

from cloudp2p.errors import CloudP2PError

PROTOCOL_VERSION = 2  # 2: the envelope carries ``echo``
TAG_SIZE = hashlib.sha256().digest_size
# The largest datagram we send or accept (JSON + tag). UDP over IPv4 carries at most 65,507 bytes;
# a request of up to 60,000 bytes of JSON (docs/INTERFACES.md) fits with its envelope.
MAX_DATAGRAM = 65_000
MAX_KIND = 64
REPLAY_WINDOW = 64

# Reasons a datagram is dropped; the protocol and the node count them under these names.
OVERSIZED = "oversized"
FORGED = "forged"
MALFORMED = "malformed"
VERSION = "version"
UNKNOWN_PEER = "unknown_peer"
MISDIRECTED = "misdirected"
REPLAY = "replay"
UNFRESH = "unfresh"
STALE_TERM = "stale_term"
BAD_TERM_OWNER = "bad_term_owner"


class BadMessageError(CloudP2PError):
    """A server-to-server message was rejected."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class MessageTooLargeError(BadMessageError):
    """A server-to-server message is too large for one datagram."""

    def __init__(self, size: int) -> None:
        super().__init__(OVERSIZED, f"{size} bytes, at most {MAX_DATAGRAM}")


# -- field validators ------------------------------------------------------------------------------


def _strict_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _server_id(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    if not _strict_int(value) or value < 1:
        raise ValueError(f"{attr.name} must be a server id (an integer >= 1), got {value!r}")


def _counter(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    if not _strict_int(value) or value < 0:
        raise ValueError(f"{attr.name} must be an integer >= 0, got {value!r}")


def _optional_id(inst: Any, attr: attrs.Attribute, value: Any) -> None:
    if value is not None:
        _server_id(inst, attr, value)


def _load(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{attr.name} must be a finite number >= 0, got {value!r}")


def _id_list(inst: Any, attr: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, tuple) or len(value) > 1024:
        raise ValueError(f"{attr.name} must be a list of at most 1024 server ids")
    for item in value:
        _server_id(inst, attr, item)


def _to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _kind(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_KIND:
        raise ValueError(f"{attr.name} must be a string of 1 to {MAX_KIND} characters")


def _json_object(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{attr.name} must be a JSON object")


# -- messages ----------------------------------------------------------------------------------------


@attrs.frozen
class Heartbeat:
    """I am alive; my load; whom I follow. From the coordinator, also its ordered successor list."""

    TYPE: ClassVar[str] = "heartbeat"
    load: float = attrs.field(validator=_load)
    coordinator: int | None = attrs.field(default=None, validator=_optional_id)
    successors: tuple[int, ...] = attrs.field(default=(), converter=_to_tuple, validator=_id_list)


@attrs.frozen
class Succeed:
    """Gholipour: coordinator ``failed`` (of the envelope term) is dead; you are its first live successor."""

    TYPE: ClassVar[str] = "succeed"
    failed: int = attrs.field(validator=_server_id)


@attrs.frozen
class Election:
    """Kordafshari: an election; answer with your load (do not start one of your own)."""

    TYPE: ClassVar[str] = "election"


@attrs.frozen
class Answer:
    """Kordafshari: my priority, in reply to ELECTION."""

    TYPE: ClassVar[str] = "answer"
    load: float = attrs.field(validator=_load)


@attrs.frozen
class Grant:
    """Kordafshari: you are the best; announce yourself as coordinator."""

    TYPE: ClassVar[str] = "grant"


@attrs.frozen
class Coordinator:
    """I am the coordinator of the envelope's term; these are my successors, best first."""

    TYPE: ClassVar[str] = "coordinator"
    successors: tuple[int, ...] = attrs.field(default=(), converter=_to_tuple, validator=_id_list)


@attrs.frozen
class App:
    """A message of another part of the server (the router), carried authenticated."""

    TYPE: ClassVar[str] = "app"
    kind: str = attrs.field(validator=_kind)
    body: dict = attrs.field(validator=_json_object)


Message = Heartbeat | Succeed | Election | Answer | Grant | Coordinator | App
MESSAGE_TYPES: dict[str, type] = {
    cls.TYPE: cls for cls in (Heartbeat, Succeed, Election, Answer, Grant, Coordinator, App)
}
# The messages counted as election traffic (heartbeats and app messages are not).
ELECTION_TYPES = frozenset({Succeed.TYPE, Election.TYPE, Answer.TYPE, Grant.TYPE, Coordinator.TYPE})
_ENVELOPE_KEYS = frozenset({"v", "type", "from", "to", "inc", "seq", "term", "echo"})


@attrs.frozen
class Envelope:
    """A message with who sent it to whom, in which incarnation, its sequence number and the sender's term.

    ``echo`` is the recipient's incarnation as the sender knows it (0 if unknown).
    """

    sender: int = attrs.field(validator=_server_id)
    recipient: int = attrs.field(validator=_server_id)
    incarnation: int = attrs.field(validator=_counter)
    seq: int = attrs.field(validator=_counter)
    term: int = attrs.field(validator=_counter)
    message: Message = attrs.field()
    echo: int = attrs.field(default=0, validator=_counter)

    @message.validator
    def _known(self, _attr: attrs.Attribute, value: Any) -> None:
        if type(value) not in MESSAGE_TYPES.values():
            raise ValueError(f"not a cluster message: {value!r}")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON here")


@attrs.define
class Codec:
    """Turns envelopes into authenticated datagrams and back.

    ``members`` are the server ids allowed to send (the whole configured
    cluster, this server included); anything else is ``UNKNOWN_PEER``. With
    ``me`` set, a datagram addressed to another server is ``MISDIRECTED``.
    """

    secret: bytes
    members: frozenset[int] = attrs.field(converter=frozenset)
    me: int | None = None
    max_size: int = MAX_DATAGRAM

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or not self.secret:
            raise ValueError("the cluster secret must be non-empty bytes")

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self.secret, payload, hashlib.sha256).digest()

    def encode(self, envelope: Envelope) -> bytes:
        message = envelope.message
        fields = attrs.asdict(message, recurse=False)
        obj: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "type": message.TYPE,
            "from": envelope.sender,
            "to": envelope.recipient,
            "inc": envelope.incarnation,
            "seq": envelope.seq,
            "term": envelope.term,
            "echo": envelope.echo,
        }
        for key, value in fields.items():
            obj[key] = list(value) if isinstance(value, tuple) else value
        try:
            payload = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise BadMessageError(MALFORMED, f"cannot encode as JSON: {e}") from None
        if len(payload) + TAG_SIZE > self.max_size:
            raise MessageTooLargeError(len(payload) + TAG_SIZE)
        return payload + self._tag(payload)

    def decode(self, data: bytes) -> Envelope:
        if len(data) > self.max_size:
            raise BadMessageError(OVERSIZED, f"{len(data)} bytes")
        if len(data) <= TAG_SIZE:
            raise BadMessageError(FORGED, "too short to carry a tag")
        payload, tag = data[:-TAG_SIZE], data[-TAG_SIZE:]
        if not hmac.compare_digest(tag, self._tag(payload)):
            raise BadMessageError(FORGED, "bad HMAC")
        try:
            obj = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:
            raise BadMessageError(MALFORMED, f"not JSON: {e}") from None
        if not isinstance(obj, dict):
            raise BadMessageError(MALFORMED, "not a JSON object")
        if obj.get("v") != PROTOCOL_VERSION:
            raise BadMessageError(VERSION, f"version {obj.get('v')!r}, expected {PROTOCOL_VERSION}")
        cls = MESSAGE_TYPES.get(obj.get("type")) if isinstance(obj.get("type"), str) else None
        if cls is None:
            raise BadMessageError(MALFORMED, f"unknown type {obj.get('type')!r}")
        fields = {k: v for k, v in obj.items() if k not in _ENVELOPE_KEYS}
        expected = {a.name for a in attrs.fields(cls)}
        if set(fields) - expected:
            raise BadMessageError(MALFORMED, f"unexpected keys {sorted(set(fields) - expected)}")
        try:
            message = cls(**fields)
            envelope = Envelope(
                sender=obj.get("from"), recipient=obj.get("to"), incarnation=obj.get("inc"),
                seq=obj.get("seq"), term=obj.get("term"), message=message,
                echo=obj.get("echo"),
            )
        except (TypeError, ValueError) as e:
            raise BadMessageError(MALFORMED, str(e)) from None
        if envelope.sender not in self.members:
            raise BadMessageError(UNKNOWN_PEER, f"server {envelope.sender} is not in the cluster")
        if self.me is not None and envelope.recipient != self.me:
            raise BadMessageError(MISDIRECTED, f"addressed to server {envelope.recipient}, not {self.me}")
        return envelope


@attrs.define
class _SenderWindow:
    incarnation: int
    highest: int
    seen: int  # bit i set: sequence number highest - i was accepted


@attrs.define
class ReplayGuard:
    """Rejects a datagram seen before, or from an earlier incarnation of its sender.

    Per sender it keeps the incarnation, the highest sequence number accepted
    and a bitmap of the ``REPLAY_WINDOW`` numbers below it, so datagrams that
    arrive out of order are still accepted once each; anything older than the
    window is rejected (the protocols here tolerate its loss).
    """

    window: int = REPLAY_WINDOW
    _senders: dict[int, _SenderWindow] = attrs.field(factory=dict)

    def check(self, envelope: Envelope) -> None:
        """Accept and remember ``envelope``'s (incarnation, seq), or raise ``BadMessageError(REPLAY)``."""
        state = self._senders.get(envelope.sender)
        inc, seq = envelope.incarnation, envelope.seq
        if state is None or inc > state.incarnation:
            self._senders[envelope.sender] = _SenderWindow(inc, seq, 1)
            return
        if inc < state.incarnation:
            raise BadMessageError(REPLAY, f"incarnation {inc} of server {envelope.sender} is over")
        if seq > state.highest:
            shift = seq - state.highest
            state.seen = ((state.seen << shift) | 1) & ((1 << self.window) - 1) if shift < self.window else 1
            state.highest = seq
            return
        age = state.highest - seq
        if age >= self.window:
            raise BadMessageError(REPLAY, f"sequence number {seq} is too old")
        if state.seen & (1 << age):
            raise BadMessageError(REPLAY, f"sequence number {seq} seen before")
        state.seen |= 1 << age

    def forget(self, sender: int) -> None:
        self._senders.pop(sender, None)


@attrs.define
class Freshness:
    """Refuses a datagram that does not echo this server's current incarnation.

    ``ReplayGuard`` lives in memory, so after a restart it cannot tell a
    recording of what a peer sent to the previous incarnation from new
    traffic. Every envelope therefore carries ``echo``: the recipient's
    incarnation as the sender last read it from an authenticated datagram.
    A peer can only echo ``incarnation`` after this incarnation started, so a
    datagram that echoes it was sent to this incarnation, whose ``ReplayGuard``
    has watched every such datagram; anything else (a recording, or a late
    datagram meant for an earlier life) is refused as ``UNFRESH``.

    An authenticated datagram still teaches the sender's incarnation (the
    highest seen, so an old recording cannot lower it) even when it is
    refused: that is what this server echoes back, which breaks the
    chicken-and-egg after both sides restart.
    """

    incarnation: int = attrs.field(validator=_counter)
    _latest: dict[int, int] = attrs.field(factory=dict)

    @incarnation.validator
    def _positive(self, _attr: attrs.Attribute, value: int) -> None:
        if value < 1:
            raise ValueError("the incarnation must be >= 1 (0 means unknown in an echo)")

    def check(self, envelope: Envelope) -> None:
        """Learn the sender's incarnation; ``BadMessageError(UNFRESH)`` unless ``envelope`` echoes ours."""
        sender, inc = envelope.sender, envelope.incarnation
        if inc > self._latest.get(sender, 0):
            self._latest[sender] = inc
        if envelope.echo != self.incarnation:
            raise BadMessageError(
                UNFRESH, f"server {sender} echoes incarnation {envelope.echo}, ours is {self.incarnation}"
            )

    def echo_for(self, peer: int) -> int:
        """What to put in ``echo`` for ``peer``: its newest incarnation seen, 0 if none yet."""
        return self._latest.get(peer, 0)
