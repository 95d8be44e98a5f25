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
    enforced_default = false       # true: `accept` makes enforced copies unless given --offline

    [transfer]                     # optional: the transfer layer's own section (cloudp2p/transfer)
    chunk_size = 32768

    [web]                          # optional: the local web app (cloudp2p/web/config.py)
    port = 0
"""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs

from cloudp2p.config import Schema, format_hostport, hostport, ip_address, positive, section, setting
from cloudp2p.transfer.config import TransferConfig
from cloudp2p.web.config import WebSettings


def _servers(value: list[Any]) -> tuple[tuple[str, int], ...]:
    if not value:
        raise ValueError('must list at least one server as "host:port"')
    out = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f'each server must be a "host:port" string, got {item!r}')
        out.append(hostport(item))
    if len(set(out)) != len(out):
        raise ValueError("lists a server twice")
    return tuple(out)


def _ip(value: str) -> str:
    if ipaddress.ip_address(ip_address(value)).is_unspecified:
        raise ValueError(f"must be the address other users reach this machine at, not {value!r}")
    return value


def _size(value: int) -> int:
    if not 1024 <= value <= 1 << 30:
        raise ValueError(f"must be between 1024 and {1 << 30} bytes, got {value}")
    return value


@section("client", required=True)
class ClientConfig:
    """The client daemon: the ``[client]`` keys, and the optional sections' settings beside them."""

    servers: tuple[tuple[str, int], ...] = setting(
        types=list, check=_servers, doc='the cloud servers\' client sockets, "host:port"'
    )
    peer_host: str = setting("127.0.0.1", _ip, "address of the peer listener")
    request_timeout: float = setting(10.0, positive, "seconds per cloud request")
    heartbeat_interval: float = setting(2.0, positive, "seconds between heartbeats")
    reconnect_max: float = setting(10.0, positive, "longest pause between reconnect attempts")
    peer_timeout: float = setting(2.0, positive, "seconds to wait for a peer's acknowledgement")
    transfer_timeout: float = setting(60.0, positive, "seconds a transfer may stall")
    max_image_size: int = setting(20 * 1024 * 1024, _size, "largest image accepted, in bytes")
    enforced_default: bool = setting(
        False, None, "grant new copies in enforced mode (views counted by the cloud) unless told otherwise"
    )
    # the file's other sections (not keys of [client]), filled in by ``load``
    transfer: TransferConfig = attrs.field(factory=TransferConfig)
    web: WebSettings = attrs.field(factory=WebSettings)


SECTION = ClientConfig.SECTION
SCHEMA = Schema((SECTION, TransferConfig.SECTION, WebSettings.SECTION))


def load(path: str) -> ClientConfig:
    """Read and validate a client.toml; raises ``ConfigError`` naming the file and key."""
    sections = SCHEMA.load(path)
    config = attrs.evolve(sections["client"], transfer=sections["transfer"], web=sections["web"])
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
