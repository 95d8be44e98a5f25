"""A Twisted UDP port that reads coalesced datagrams (Linux UDP GRO) and hands them out one by one.

With ``UDP_GRO`` set, the kernel may return several datagrams of one flow in a
single ``recvmsg``, back to back, each ``gso_size`` bytes (the last may be
shorter), with the size in a control message. One system call then brings up
to 64 datagrams; ``datagramReceived`` still sees one datagram per call, as a
``memoryview`` slice of the coalesced buffer. Without GRO support (or without
the control message), every read is one datagram, as with ``udp.Port``.
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import Any

from twisted.internet import udp
from twisted.python import log

UDP_GRO = getattr(socket, "UDP_GRO", 104)
_ANCILLARY = socket.CMSG_SPACE(4)
_IGNORE = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNREFUSED}
MAX_READ = 65535


class CoalescingPort(udp.Port):
    """``udp.Port`` whose reads may carry several datagrams (see the module docstring)."""

    coalesced = 0  # reads that carried more than one datagram

    def doRead(self) -> None:
        read = 0
        recvmsg = self.socket.recvmsg
        protocol = self.protocol
        ipv6 = self.addressFamily == socket.AF_INET6
        while read < self.maxThroughput:
            try:
                data, ancillary, _flags, addr = recvmsg(MAX_READ, _ANCILLARY)
            except OSError as e:
                if e.args[0] in _IGNORE:
                    return
                raise
            read += len(data)
            if ipv6:
                addr = addr[:2]
            size = len(data)
            for level, kind, value in ancillary:
                if level == socket.SOL_UDP and kind == UDP_GRO and len(value) >= 4:
                    size = int.from_bytes(value[:4], sys.byteorder)
            try:
                if 0 < size < len(data):
                    self.coalesced += 1
                    view = memoryview(data)
                    for offset in range(0, len(data), size):
                        protocol.datagramReceived(view[offset : offset + size], addr)
                else:
                    protocol.datagramReceived(data, addr)
            except BaseException:
                log.err()


def listen_coalescing(reactor: Any, protocol: Any, interface: str, max_packet: int) -> CoalescingPort:
    """Like ``reactor.listenUDP(0, ...)``, with UDP GRO asked for (silently absent if unsupported)."""
    port = CoalescingPort(0, protocol, interface, max_packet, reactor)
    port.startListening()
    try:
        port.socket.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
    except OSError:
        pass
    return port
