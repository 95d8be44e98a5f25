"""The client's configuration: ``DIR/client.toml``, validated strictly at start.

::

    [client]
    servers = ["127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"]   # the cloud's client sockets
    peer_host = "127.0.0.1"        # the address the peer listener binds and advertises
    request_timeout = 10.0         # seconds a cloud request may take (with retries) before it fails
    heartbeat_interval = 2.0       # seconds between presence heartbeats
    reconnect_max = 10.0           # longest pause between reconnect attempts while the cloud is away
    peer_timeout = 2.0             # seconds to wait for a peer's acknowledgement before queueing
    transfer_timeout = 60.0        # seconds a transfer may stall before it is given up (resumable)
    max_image_size = 20971520      # bytes: larger files are refused before anything is sent

    [transfer]                     # optional: the transfer layer's own section (cloudp2p/transfer)
    chunk_size = 32768

    [web]                          # optional: the local web app (cloudp2p/web/config.py)
    port = 0
"""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs

from cloudp2p.config import Field, Schema, Section, format_hostport, hostport, positive
from cloudp2p.web.config import WebSettings


def _servers(value: list[Any]) -> list[tuple[str, int]]:
    if not value:
        raise ValueError('must list at least one server as "host:port"')
    out = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f'each server must be a "host:port" string, got {item!r}')
        out.append(hostport(item))
    if len(set(out)) != len(out):
        raise ValueError("lists a server twice")
    return out


def _ip(value: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"must be an IP address such as 127.0.0.1, got {value!r}") from None
    if address.is_unspecified:
        raise ValueError(f"must be the address other users reach this machine at, not {value!r}")
    return value


def _size(value: int) -> int:
    if not 1024 <= value <= 1 << 30:
        raise ValueError(f"must be between 1024 and {1 << 30} bytes, got {value}")
    return value


SECTION = Section(
    "client",
    {
        "servers": Field(list, check=_servers, doc='the cloud servers\' client sockets, "host:port"'),
        "peer_host": Field(str, "127.0.0.1", _ip, "address of the peer listener"),
        "request_timeout": Field((int, float), 10.0, positive, "seconds per cloud request"),
        "heartbeat_interval": Field((int, float), 2.0, positive, "seconds between heartbeats"),
        "reconnect_max": Field((int, float), 10.0, positive, "longest pause between reconnect attempts"),
        "peer_timeout": Field((int, float), 2.0, positive, "seconds to wait for a peer's acknowledgement"),
        "transfer_timeout": Field((int, float), 60.0, positive, "seconds a transfer may stall"),
        "max_image_size": Field(int, 20 * 1024 * 1024, _size, "largest image accepted, in bytes"),
    },
    required=True,
    doc="The client daemon.",
)


def _schema() -> Schema:
    from cloudp2p.transfer.config import SECTION as TRANSFER
    from cloudp2p.web.config import SECTION as WEB

    return Schema((SECTION, TRANSFER, WEB))


SCHEMA = _schema()


@attrs.frozen
class ClientConfig:
    servers: tuple[tuple[str, int], ...]
    peer_host: str = "127.0.0.1"
    request_timeout: float = 10.0
    heartbeat_interval: float = 2.0
    reconnect_max: float = 10.0
    peer_timeout: float = 2.0
    transfer_timeout: float = 60.0
    max_image_size: int = 20 * 1024 * 1024
    transfer: dict[str, Any] = attrs.field(factory=dict)  # the optional [transfer] table, validated
    web: WebSettings = attrs.field(factory=WebSettings)  # the optional [web] table

    @classmethod
    def from_dict(cls, validated: dict[str, dict[str, Any]]) -> ClientConfig:
        c = validated["client"]
        return cls(
            servers=tuple(c["servers"]),
            peer_host=c["peer_host"],
            request_timeout=float(c["request_timeout"]),
            heartbeat_interval=float(c["heartbeat_interval"]),
            reconnect_max=float(c["reconnect_max"]),
            peer_timeout=float(c["peer_timeout"]),
            transfer_timeout=float(c["transfer_timeout"]),
            max_image_size=int(c["max_image_size"]),
            transfer=dict(validated.get("transfer", {})),
            web=WebSettings.from_section(validated["web"]),
        )


def load(path: str) -> ClientConfig:
    """Read and validate a client.toml; raises ``ConfigError`` naming the file and key."""
    config = ClientConfig.from_dict(SCHEMA.load(path))
    config.web.check(path)
    return config


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def render(
    servers: list[tuple[str, int]],
    transfer: dict[str, Any] | None = None,
    web: dict[str, Any] | None = None,
    **options: Any,
) -> str:
    """A client.toml for ``servers`` (validated before it is returned)."""
    lines = ["[client]", "servers = [" + ", ".join(f'"{format_hostport(s)}"' for s in servers) + "]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in options.items()]
    if transfer:
        lines += ["", "[transfer]"] + [f"{key} = {_toml_value(value)}" for key, value in transfer.items()]
    if web:
        lines += ["", "[web]"] + [f"{key} = {_toml_value(value)}" for key, value in web.items()]
    text = "\n".join(lines) + "\n"
    import tomllib

    SCHEMA.validate(tomllib.loads(text), "client.toml")
    return text
