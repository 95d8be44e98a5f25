"""The ``[transfer]`` config section and the ``TransferConfig`` value object built from it."""

from __future__ import annotations

from typing import Any

import attrs

from cloudp2p.config import Field, Section, in_range, positive
from cloudp2p.transfer.wire import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE

DEFAULT_CHUNK_SIZE = 1200  # payload bytes: under any real path MTU after IP/UDP/our headers
LAN_CHUNK_SIZE = 32768  # a good setting for loopback and LANs


def _interface(value: str) -> str:
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"must be an IP address such as 0.0.0.0 or 127.0.0.1, got {value!r}") from None
    return value


SECTION = Section(
    "transfer",
    {
        "chunk_size": Field(
            int,
            DEFAULT_CHUNK_SIZE,
            in_range(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE),
            "payload bytes per datagram for fetches this node makes (1200 is safe anywhere; 32768 for LANs)",
        ),
        "max_file_size": Field(int, 64 * 1024 * 1024, positive, "largest transfer accepted, in bytes"),
        "max_per_peer": Field(int, 4, in_range(1, 1000), "concurrent transfers with one peer address"),
        "interface": Field(str, "0.0.0.0", _interface, "address transfer sockets bind to (port is always 0)"),
        "peer_timeout": Field(
            (int, float), 10.0, in_range(0.05, 3600), "seconds of silence that end a transfer"
        ),
        "offer_timeout": Field(
            (int, float), 300.0, in_range(0.05, 86400), "seconds an offer with no fetch running stays open"
        ),
        "recv_buffer": Field(int, 4 * 1024 * 1024, in_range(64 * 1024, 256 * 1024 * 1024), "SO_RCVBUF bytes"),
        "send_buffer": Field(int, 1024 * 1024, in_range(64 * 1024, 256 * 1024 * 1024), "SO_SNDBUF bytes"),
        "initial_window": Field(int, 16, in_range(2, 65536), "congestion window at the start, in chunks"),
        "max_window": Field(
            int, 4096, in_range(2, 65536), "most chunks in flight, whatever the buffers allow"
        ),
        "initial_rto": Field(
            (int, float), 1.0, in_range(0.001, 60), "retransmission timeout before any RTT sample"
        ),
        "min_rto": Field((int, float), 0.2, in_range(0.001, 60), "lower bound of the retransmission timeout"),
        "max_rto": Field((int, float), 10.0, in_range(0.01, 600), "upper bound of the (backed-off) timeout"),
        "gso": Field(bool, True, doc="batch datagrams with UDP GSO/GRO where the kernel allows it"),
        "linger": Field((int, float), 1.0, in_range(0, 60), "seconds a finished fetch answers late DATA"),
    },
    doc="Reliable chunked transfers over UDP (cloudp2p.transfer).",
)


@attrs.frozen
class TransferConfig:
    """Every tunable of the transfer layer, with the ``[transfer]`` defaults."""

    chunk_size: int = attrs.field(default=DEFAULT_CHUNK_SIZE)
    max_file_size: int = 64 * 1024 * 1024
    max_per_peer: int = 4
    interface: str = "0.0.0.0"
    peer_timeout: float = 10.0
    offer_timeout: float = 300.0
    recv_buffer: int = 4 * 1024 * 1024
    send_buffer: int = 1024 * 1024
    max_window: int = 4096
    initial_window: int = 16
    initial_rto: float = 1.0
    min_rto: float = 0.2
    max_rto: float = 10.0
    linger: float = 1.0
    gso: bool = True
    request_interval: float = 0.25  # first REQUEST retry; doubles up to 2 s
    state_interval: float = 1.0  # how often fetch_to_file persists its resume state
    burst: int = 256  # most datagrams sent in one go before yielding to the reactor

    @chunk_size.validator
    def _check_chunk(self, attribute: Any, value: int) -> None:
        if not MIN_CHUNK_SIZE <= value <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}, got {value}")

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> TransferConfig:
        """From the validated ``[transfer]`` table (``Schema.load(...)["transfer"]``)."""
        return cls(**{k: v for k, v in section.items() if k in attrs.fields_dict(cls)})
