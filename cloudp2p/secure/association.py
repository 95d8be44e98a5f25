"""One DTLS 1.2 association with one peer, over pyOpenSSL memory BIOs.

OpenSSL does the handshake, the record protection, the replay window and the
handshake retransmissions; this object moves bytes between its BIOs and the
network, keeps its timers on the injected clock and frames messages::

    HANDSHAKING --handshake done--> OPEN --close() / fatal alert / idle (owner)--> CLOSED
         |--handshake_timeout, fatal alert, failed verification--> CLOSED

Messages. One message travels in one datagram, as the plaintext of one or more
records (a record carries at most 16 KiB; a request may be 60 KB). The first
plaintext byte says what it is: ``MESSAGE`` (the rest is the payload handed to
the owner) or ``PING`` (a keepalive, nothing to deliver). A datagram whose
records do not all decrypt is dropped whole (``partial``), never delivered cut.

The owner (``endpoint.py``) gives three callbacks: ``opened(assoc)``,
``message(assoc, payload)`` and ``closed(assoc, reason)``; ``transmit(datagram)``
writes to the peer. Nothing here raises into the caller for bad input.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from twisted.logger import Logger

from cloudp2p.secure import records as rec
from cloudp2p.secure.tls import ConnInfo

MESSAGE = 1
PING = 2
MAX_PIECE = 16384  # DTLS plaintext per record
DRAIN_SIZE = 1 << 17
EXPORTER_LABEL = b"EXPORTER-cloudp2p"


class State(enum.Enum):
    HANDSHAKING = "handshaking"
    OPEN = "open"
    CLOSED = "closed"


class Association:
    """A DTLS association driven by datagrams in, datagrams out and a clock."""

    log = Logger()

    def __init__(
        self,
        connection: SSL.Connection,
        info: ConnInfo,
        *,
        clock: Any,
        transmit: Callable[[bytes], None],
        opened: Callable[[Association], None],
        message: Callable[[Association, bytes], None],
        closed: Callable[[Association, str], None],
        handshake_timeout: float,
        counters: Counter[str] | None = None,
    ) -> None:
        self.connection = connection
        self.info = info
        self.peer = info.peer
        self.clock = clock
        self._transmit = transmit
        self._opened = opened
        self._message = message
        self._closed = closed
        self.counters = counters if counters is not None else Counter()
        self.state = State.HANDSHAKING
        self.reason: str | None = None
        now = clock.seconds()
        self.created = now
        self.last_received = now
        self.last_sent = now
        self._timer: Any = None
        self._deadline = clock.callLater(handshake_timeout, self._handshake_expired)

    # -- starting ---------------------------------------------------------------------------------

    def start_client(self) -> None:
        self.connection.set_connect_state()
        self._handshake()

    def start_server(self, client_hello: bytes) -> None:
        """After ``DTLSv1_listen`` accepted ``client_hello``: feed it again (see pyOpenSSL's notes:
        on a memory BIO the listen step consumed it) and answer."""
        self.connection.bio_write(client_hello)
        self._handshake()

    # -- datagrams in -----------------------------------------------------------------------------

    def receive(self, records: list[bytes]) -> None:
        """Process one datagram, already split into records."""
        if self.state is State.CLOSED:
            return
        pieces: list[bytes] = []
        expected = 0
        for record in records:
            if self.state is State.CLOSED:
                return
            self.connection.bio_write(record)
            if self.state is State.HANDSHAKING:
                self._handshake()
                continue
            if rec.content_type(record) == rec.APPLICATION_DATA:
                expected += 1
            self._read(pieces)
        self._flush()
        if self.state is not State.OPEN or not expected:
            return
        if len(pieces) != expected:
            self.counters["partial"] += 1  # a record was forged, replayed or damaged: drop the whole
            return
        self.last_received = self.clock.seconds()
        data = b"".join(pieces)
        if not data:
            self.counters["empty"] += 1
            return
        kind = data[0]
        if kind == MESSAGE:
            self._message(self, data[1:])
        elif kind == PING:
            self.counters["pings_received"] += 1
        else:
            self.counters["unknown_kind"] += 1

    def _read(self, pieces: list[bytes]) -> None:
        while True:
            try:
                piece = self.connection.recv(MAX_PIECE)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:
                self.close("peer_closed")
                return
            except SSL.Error as e:
                self.log.debug("association with {peer} failed: {error}", peer=self.peer, error=e)
                self.close("fatal_error")
                return
            pieces.append(piece)

    # -- handshake --------------------------------------------------------------------------------

    def _handshake(self) -> None:
        try:
            self.connection.do_handshake()
        except SSL.WantReadError:
            self._flush()
            self._arm_timer()
            return
        except SSL.Error as e:
            self._flush()  # our fatal alert, if OpenSSL wrote one
            reason = "verify_failed" if self.info.verify_error is not None else "handshake_failed"
            self.log.debug("handshake with {peer} failed: {error}", peer=self.peer, error=e)
            self.close(reason)
            return
        self._flush()
        self.state = State.OPEN
        self.last_received = self.clock.seconds()
        if self._deadline.active():
            self._deadline.cancel()
        self._arm_timer()
        self._opened(self)

    def _arm_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.state is State.CLOSED:
            return
        wait = self.connection.DTLSv1_get_timeout()
        if wait is not None:
            self._timer = self.clock.callLater(max(wait, 0.01), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.state is State.CLOSED:
            return
        try:
            if self.connection.DTLSv1_handle_timeout():
                self.counters["retransmissions"] += 1
        except SSL.Error:
            self.close("handshake_failed")
            return
        self._flush()
        self._arm_timer()

    def _handshake_expired(self) -> None:
        if self.state is State.HANDSHAKING:
            self.close("handshake_timeout")

    # -- datagrams out ----------------------------------------------------------------------------

    def _flush(self) -> None:
        out = []
        while True:
            try:
                chunk = self.connection.bio_read(DRAIN_SIZE)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            out.append(chunk)
        if out:
            self.last_sent = self.clock.seconds()
            self._transmit(b"".join(out))

    def send(self, payload: bytes) -> bool:
        """Protect and send one message; False if the association is not open."""
        return self._send_plain(bytes((MESSAGE,)) + payload)

    def ping(self) -> bool:
        return self._send_plain(bytes((PING,)))

    def _send_plain(self, data: bytes) -> bool:
        if self.state is not State.OPEN:
            return False
        view = memoryview(data)
        try:
            for start in range(0, len(data), MAX_PIECE):
                self.connection.send(view[start : start + MAX_PIECE])
        except SSL.Error as e:
            self.log.debug("cannot send to {peer}: {error}", peer=self.peer, error=e)
            self.close("fatal_error")
            return False
        self._flush()
        return True

    # -- keys and end -----------------------------------------------------------------------------

    def export(self, context: bytes, length: int = 32, label: bytes = EXPORTER_LABEL) -> bytes:
        """Keying material bound to this association (RFC 5705), e.g. a transfer's key."""
        if self.state is not State.OPEN:
            raise LookupError(f"the association with {self.peer} is not open")
        return self.connection.export_keying_material(label, length, context)

    def close(self, reason: str, *, notify: bool = False) -> None:
        """End the association (``notify``: send close_notify first); tells the owner once."""
        if self.state is State.CLOSED:
            return
        was_open = self.state is State.OPEN
        self.state = State.CLOSED
        self.reason = reason
        if self._deadline.active():
            self._deadline.cancel()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if notify and was_open:
            try:
                self.connection.shutdown()
            except SSL.Error:
                pass
            self._flush()
        self._closed(self, reason)
