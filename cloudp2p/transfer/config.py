"""The ``[transfer]`` config section: ``TransferConfig`` is both its schema and its value."""

from __future__ import annotations

from typing import Any

from cloudp2p.config import in_range, ip_address, positive, section, setting
from cloudp2p.transfer.wire import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE

DEFAULT_CHUNK_SIZE = 1200  # payload bytes: under any real path MTU after IP/UDP/our headers
LAN_CHUNK_SIZE = 32768  # a good setting for loopback and LANs


@section("transfer", doc="Reliable chunked transfers over UDP (cloudp2p.transfer).")
class TransferConfig:
    """Every tunable of the transfer layer: the ``[transfer]`` keys, then the code's own."""

    chunk_size: int = setting(
        DEFAULT_CHUNK_SIZE,
        in_range(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE),
        "payload bytes per datagram for fetches this node makes (1200 is safe anywhere; 32768 for LANs)",
    )
    max_file_size: int = setting(64 * 1024 * 1024, positive, "largest transfer accepted, in bytes")
    max_per_peer: int = setting(4, in_range(1, 1000), "concurrent transfers with one peer address")
    interface: str = setting("0.0.0.0", ip_address, "address transfer sockets bind to (port is always 0)")
    peer_timeout: float = setting(10.0, in_range(0.05, 3600), "seconds of silence that end a transfer")
    offer_timeout: float = setting(
        300.0, in_range(0.05, 86400), "seconds an offer with no fetch running stays open"
    )
    receive_buffer: int = setting(4 * 1024 * 1024, in_range(64 * 1024, 256 * 1024 * 1024), "SO_RCVBUF bytes")
    send_buffer: int = setting(1024 * 1024, in_range(64 * 1024, 256 * 1024 * 1024), "SO_SNDBUF bytes")
    initial_window: int = setting(16, in_range(2, 65536), "congestion window at the start, in chunks")
    max_window: int = setting(4096, in_range(2, 65536), "most chunks in flight, whatever the buffers allow")
    initial_rto: float = setting(1.0, in_range(0.001, 60), "retransmission timeout before any RTT sample")
    min_rto: float = setting(0.2, in_range(0.001, 60), "lower bound of the retransmission timeout")
    max_rto: float = setting(10.0, in_range(0.01, 600), "upper bound of the (backed-off) timeout")
    gso: bool = setting(True, doc="batch datagrams with UDP GSO/GRO where the kernel allows it")
    linger: float = setting(1.0, in_range(0, 60), "seconds a finished fetch answers late DATA")
    # the code's own tunables (not keys of the file)
    request_interval: float = 0.25  # first REQUEST retry; doubles up to 2 s
    state_interval: float = 1.0  # how often fetch_to_file persists its resume state
    burst: int = 256  # most datagrams sent in one go before yielding to the reactor

    @chunk_size.validator
    def _check_chunk(self, attribute: Any, value: int) -> None:
        if not MIN_CHUNK_SIZE <= value <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}, got {value}")


SECTION = TransferConfig.SECTION
