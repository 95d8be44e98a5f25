"""The ``[cluster]`` section of a server's config, and turning it into node settings.

    [cluster]
    listen = "127.0.0.1:9001"           # this server's cluster socket
    secret = "a long random string"    # HMAC-SHA256 key shared by all servers (>= 16 characters)
    peers = ["2@127.0.0.1:9002", "3@127.0.0.1:9003"]   # ID@host:port of every other server
    heartbeat_interval = 0.2           # seconds between heartbeats
    failure_timeout = 1.0              # silence after which a peer is suspected dead
    election_timeout = 0.3             # wait for an answer / an announcement before moving on
    receive_buffer = 1048576           # SO_RCVBUF asked for on the cluster socket, bytes

The peer list may include this server's own entry (so that every server can
use the same list); it is ignored.
"""

from __future__ import annotations

from typing import Any

import attrs

from cloudp2p.config import at_least, hostport, hostport_or_zero, seconds, section, setting
from cloudp2p.errors import ConfigError

MIN_SECRET = 16


def _secret(value: str) -> str:
    if len(value) < MIN_SECRET:
        raise ValueError(f"must be at least {MIN_SECRET} characters long")
    return value


def parse_peer(value: Any) -> tuple[int, tuple[str, int]]:
    """``"2@127.0.0.1:9002"`` -> ``(2, ("127.0.0.1", 9002))``."""
    if not isinstance(value, str) or "@" not in value:
        raise ValueError(f"each peer must be a string ID@host:port, got {value!r}")
    ident, _, address = value.partition("@")
    if not ident.isdigit() or int(ident) < 1:
        raise ValueError(f"peer {value!r}: the ID before @ must be a server id (an integer >= 1)")
    return int(ident), hostport(address)


def _peers(value: list) -> dict[int, tuple[str, int]]:
    peers: dict[int, tuple[str, int]] = {}
    for item in value:
        ident, address = parse_peer(item)
        if ident in peers:
            raise ValueError(f"server id {ident} is listed twice")
        if address in peers.values():
            raise ValueError(f"address {item.partition('@')[2]} is listed twice")
        peers[ident] = address
    return peers


_buffer = at_least(65536, "bytes")


@section("cluster", required=True)
class ClusterSection:
    """Server-to-server membership, failure detection and election."""

    listen: tuple[str, int] = setting(
        types=str, check=hostport_or_zero, doc="host:port of this server's cluster socket"
    )
    secret: str = setting(types=str, check=_secret, doc="HMAC-SHA256 key shared by all servers")
    peers: dict[int, tuple[str, int]] = setting(
        {}, _peers, '["ID@host:port", ...] of the other servers', types=list
    )
    heartbeat_interval: float = setting(0.2, seconds, "seconds between heartbeats")
    failure_timeout: float = setting(1.0, seconds, "silence after which a peer is suspected dead")
    election_timeout: float = setting(0.3, seconds, "wait for an answer before moving on")
    receive_buffer: int = setting(1 << 20, _buffer, "SO_RCVBUF in bytes")


SECTION = ClusterSection.SECTION


@attrs.frozen
class ClusterSettings:
    """The validated ``[cluster]`` section for one server, its own entry removed from the peers."""

    server_id: int
    listen: tuple[str, int]
    secret: bytes
    peers: dict[int, tuple[str, int]]
    heartbeat_interval: float
    failure_timeout: float
    election_timeout: float
    receive_buffer: int

    def node_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``ClusterNode`` (add ``clock`` and ``load_source``)."""
        return {
            "server_id": self.server_id,
            "peers": dict(self.peers),
            "secret": self.secret,
            "heartbeat_interval": self.heartbeat_interval,
            "failure_timeout": self.failure_timeout,
            "election_timeout": self.election_timeout,
        }


def settings(section: ClusterSection, server_id: int, origin: str = "<config>") -> ClusterSettings:
    """Checks that need more than one key (or the server id); raises ``ConfigError`` naming file and key."""
    where = f"{origin}: [cluster]"
    hb, timeout = section.heartbeat_interval, section.failure_timeout
    if timeout < 2 * hb:
        raise ConfigError(
            f"{where} failure_timeout: must be at least twice heartbeat_interval ({hb}), got {timeout}"
        )
    if section.election_timeout > timeout:
        raise ConfigError(f"{where} election_timeout: must not exceed failure_timeout ({timeout})")
    peers = dict(section.peers)
    peers.pop(server_id, None)
    return ClusterSettings(
        server_id=server_id,
        listen=section.listen,
        secret=section.secret.encode("utf-8"),
        peers=peers,
        heartbeat_interval=hb,
        failure_timeout=timeout,
        election_timeout=section.election_timeout,
        receive_buffer=section.receive_buffer,
    )
