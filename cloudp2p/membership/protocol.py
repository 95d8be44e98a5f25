"""The cluster socket's DatagramProtocol: framing only.

It decodes and authenticates each datagram (``Codec``), rejects datagrams that
do not echo this incarnation (``Freshness``) and replays (``ReplayGuard``) and
hands the ``Envelope`` to the node logic. It decides
nothing else. Every datagram it cannot use is dropped and counted by reason;
nothing raises out of ``datagramReceived``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from cloudp2p.membership.messages import (
    MAX_DATAGRAM,
    UNFRESH,
    BadMessageError,
    Codec,
    Envelope,
    Freshness,
    ReplayGuard,
)
from cloudp2p.sockets import set_buffer

Address = tuple[str, int]
DEFAULT_RECEIVE_BUFFER = 1 << 20


class ClusterProtocol(DatagramProtocol):
    """Frames cluster datagrams; ``deliver(envelope, address)`` gets the good ones.

    ``incarnation`` is this server's (see ``Freshness``); ``on_unfresh(envelope)``,
    if given, hears of each authentic datagram refused only for not echoing it,
    so the node can tell the sender its incarnation at once.
    """

    log = Logger()
    # Larger than any datagram we accept, so an oversized one arrives whole and is rejected as
    # oversized instead of being silently truncated (Twisted's default is 8192).
    maxPacketSize = MAX_DATAGRAM + 1024

    def __init__(
        self,
        codec: Codec,
        deliver: Callable[[Envelope, Address], None],
        *,
        incarnation: int,
        on_unfresh: Callable[[Envelope], None] | None = None,
    ) -> None:
        self.codec = codec
        self.deliver = deliver
        self.on_unfresh = on_unfresh
        self.freshness = Freshness(incarnation)
        self.replay = ReplayGuard()
        self.dropped: Counter[str] = Counter()
        self.send_errors = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        envelope = None
        try:
            envelope = self.codec.decode(datagram)
            self.freshness.check(envelope)
            self.replay.check(envelope)
        except BadMessageError as e:
            self.dropped[e.reason] += 1
            self.log.debug("dropped a datagram from {addr}: {error}", addr=addr, error=e)
            if e.reason == UNFRESH and envelope is not None and self.on_unfresh is not None:
                try:
                    self.on_unfresh(envelope)
                except Exception:
                    self.dropped["handler_error"] += 1
                    self.log.failure("handling an unfresh datagram from server {sender} failed",
                                     sender=envelope.sender)
            return
        except Exception:
            self.dropped["internal"] += 1
            self.log.failure("decoding a datagram from {addr} failed", addr=addr)
            return
        try:
            self.deliver(envelope, addr)
        except Exception:
            self.dropped["handler_error"] += 1
            self.log.failure("handling {type} from server {sender} failed",
                             type=envelope.message.TYPE, sender=envelope.sender)

    def send(self, datagram: bytes, address: Address) -> bool:
        """Write one datagram; False (and counted) if the socket is closed or the write fails."""
        transport = self.transport
        if transport is None or not getattr(transport, "connected", True):
            self.send_errors += 1
            return False
        try:
            transport.write(datagram, address)
        except (OSError, RuntimeError) as e:
            self.send_errors += 1
            self.log.debug("sending to {address} failed: {error}", address=address, error=e)
            return False
        return True


def listen_udp(
    reactor: Any, protocol: Any, address: Address, receive_buffer: int = DEFAULT_RECEIVE_BUFFER
) -> Any:
    """Bind ``protocol`` on ``address`` with its own ``maxPacketSize`` and the receive buffer asked for.

    Twisted's UDP port reads ``recvfrom(maxPacketSize)`` with the value given
    to ``listenUDP`` (default 8192), not the protocol's attribute: pass it, or
    larger datagrams are silently truncated (and then fail their HMAC).
    """
    host, port = address
    listening = reactor.listenUDP(port, protocol, interface=host, maxPacketSize=protocol.maxPacketSize)
    set_buffer(listening, receive_buffer)
    return listening
