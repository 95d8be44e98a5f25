"""Socket buffer sizes: the one place that asks the kernel for them.

Every UDP listener (cluster, client, transfer and the client's router socket)
sizes its buffers here. Linux doubles the value asked for (bookkeeping) and caps
it at ``net.core.rmem_max`` / ``wmem_max``; a privileged process may go past the
cap with the ``FORCE`` options, which we try when the kernel gave less than asked.
"""

from __future__ import annotations

import socket
from typing import Any

RECEIVE = socket.SO_RCVBUF
SEND = socket.SO_SNDBUF
_FORCE = {
    RECEIVE: getattr(socket, "SO_RCVBUFFORCE", None),
    SEND: getattr(socket, "SO_SNDBUFFORCE", None),
}


def set_buffer(port: Any, size: int, option: int = RECEIVE) -> int | None:
    """Ask for a ``size``-byte buffer on ``port`` (a listening port or a socket); return what the kernel gave.

    None when there is no real socket (a memory transport in tests) or the kernel refused
    the option: the caller keeps running with the system default.
    """
    sock = port if isinstance(port, socket.socket) else getattr(port, "socket", None)
    if sock is None:
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, size)
        if sock.getsockopt(socket.SOL_SOCKET, option) < size and _FORCE[option] is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _FORCE[option], size)
            except OSError:
                pass  # not privileged: keep what the system allows
        return sock.getsockopt(socket.SOL_SOCKET, option)
    except OSError:
        return None
