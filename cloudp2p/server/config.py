"""A server's whole config: the ``[server]`` section, ``[cluster]`` and the other areas' sections.

    [server]
    id = 1                              # this server's id, >= 1, unique in the cloud
    client_listen = "127.0.0.1:9101"    # where clients send requests

    [cluster]                           # see cloudp2p/membership/config.py
    listen = "127.0.0.1:9001"
    secret = "a long random string"     # or: secret_file = "/etc/cloudp2p/secret"
    peers = ["2@127.0.0.1:9002", "3@127.0.0.1:9003"]

``load(path)`` validates all of it strictly and adds the checks that need more
than one key: the server's own id must not be listed as another address among
the peers, ids and addresses must be unique, the client and cluster sockets
must differ, ``peers`` must be written out (``[]`` for a one-server cloud), and
the secret comes from exactly one of ``secret`` and ``secret_file``, a
``secret_file`` may be read by its owner only, and the public development
secret of etc/server*.toml runs only where every address is loopback. Every
error names the file, the section and the key.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from typing import Any

import attrs

from cloudp2p.config import (
    Schema,
    at_least,
    format_hostport,
    hostport,
    in_range,
    read_toml,
    section,
    setting,
)
from cloudp2p.directory.config import DirectorySettings
from cloudp2p.directory.config import check_section as check_directory
from cloudp2p.encryption.config import EncryptionSettings
from cloudp2p.errors import ConfigError
from cloudp2p.membership import config as cluster_config
from cloudp2p.routing.router import RouterSettings
from cloudp2p.transfer.config import TransferConfig


def _server_id(value: int) -> int:
    if value < 1:
        raise ValueError(f"must be an integer >= 1, got {value}")
    return value


_buffer = at_least(65536, "bytes")


@section("server", required=True)
class ServerSettings(RouterSettings):
    """This server: its id, its client socket, its work pool and the request router's limits."""

    id: int = setting(types=int, check=_server_id, doc="this server's id (>= 1), unique in the cloud")
    client_listen: tuple[str, int] = setting(
        types=str, check=hostport, doc="host:port of the socket clients send requests to"
    )
    state_dir: str = setting("", doc="directory for this server's files (other areas use it)")
    receive_buffer: int = setting(4 << 20, _buffer, "SO_RCVBUF of the client socket")
    work_threads: int = setting(2, in_range(1, 64), "threads for CPU-bound work")
    work_queue: int = setting(256, at_least(1), "work requests allowed to wait for a thread")
    test_ops: bool = setting(
        False, doc="tests and benchmarks only: register the load-test op work and the recent_runs query"
    )


@section("cluster", required=True)
class ServerClusterSection(cluster_config.ClusterSection):
    """The membership owner's ``[cluster]`` section, plus ``secret_file`` as an alternative to ``secret``."""

    secret: str = setting("", doc="HMAC-SHA256 key shared by all servers (or give secret_file)")
    secret_file: str = setting("", doc="file holding the cluster secret (instead of secret)")


SECTION = ServerSettings.SECTION


@attrs.frozen(kw_only=True)
class ServerConfig:
    """A server's whole config file: one settings object per section."""

    server: ServerSettings
    cluster: ServerClusterSection
    directory: DirectorySettings = attrs.field(factory=DirectorySettings)
    transfer: TransferConfig = attrs.field(factory=TransferConfig)
    encryption: EncryptionSettings = attrs.field(factory=EncryptionSettings)


def schema() -> Schema:
    """The sections of ``ServerConfig``, in file order."""
    classes = (ServerSettings, ServerClusterSection, DirectorySettings, TransferConfig, EncryptionSettings)
    return Schema(tuple(cls.SECTION for cls in classes))


def load(path: str | os.PathLike[str]) -> ServerConfig:
    """Read, validate and cross-check a server config file; ``ConfigError`` names file and key."""
    return validate(read_toml(path), os.fspath(path))


def validate(raw: dict[str, Any], origin: str = "<config>") -> ServerConfig:
    sections = schema().validate(raw, origin)
    server, cluster = sections["server"], sections["cluster"]
    where = f"{origin}: [cluster]"
    if "peers" not in raw.get("cluster", {}):
        raise ConfigError(
            f'{where} peers: missing required key; list every other server as "ID@host:port" '
            f"(peers = [] for a one-server cloud)"
        )
    cluster = attrs.evolve(cluster, secret=_resolve_secret(cluster, origin), secret_file="")
    config = ServerConfig(**{**sections, "cluster": cluster})
    own_id = server.id
    listen = cluster.listen
    for peer_id, address in cluster.peers.items():
        if peer_id != own_id and address == listen:
            raise ConfigError(
                f"{where} peers: server {peer_id} uses this server's listen address {format_hostport(listen)}"
            )
        if peer_id == own_id and address != listen and listen[1] != 0:
            raise ConfigError(
                f"{where} peers: this server's own id {own_id} is listed at {format_hostport(address)}, "
                f"but listen is {format_hostport(listen)}"
            )
    if server.client_listen == listen:
        raise ConfigError(
            f"{origin}: [server] client_listen: must differ from [cluster] listen ({format_hostport(listen)})"
        )
    _check_development_secret(config, origin)
    if server.state_dir and not os.path.isdir(server.state_dir):
        raise ConfigError(f"{origin}: [server] state_dir: {server.state_dir!r} is not a directory")
    check_directory(config.directory, origin)
    # Cross-checks owned by the membership part (timers, own entry among the peers).
    cluster_config.settings(cluster, own_id, origin)
    return config


# The secret written in etc/server*.toml for `make cluster`: public, so only for a cloud that no
# other machine can reach.
DEVELOPMENT_SECRETS = frozenset({"cloudp2p-local-development-secret-change-me"})


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _check_development_secret(config: ServerConfig, origin: str) -> None:
    """The development secret refuses to run on any address another machine could reach.

    It authenticates the servers to each other and keys the clients' address cookies: with a
    public secret, anyone could forge both.
    """
    cluster = config.cluster
    if cluster.secret not in DEVELOPMENT_SECRETS:
        return
    addresses = [
        ("[server] client_listen", config.server.client_listen[0]),
        ("[cluster] listen", cluster.listen[0]),
        *((f"[cluster] peers ({peer})", address[0]) for peer, address in cluster.peers.items()),
    ]
    for key, host in addresses:
        if not _is_loopback(host):
            raise ConfigError(
                f"{origin}: {key}: {host} is not a loopback address, and [cluster] secret is the "
                "public development secret of etc/server*.toml; put a long random secret in a file "
                "only the server can read and set secret_file"
            )


def _check_private(path: str, where: str) -> None:
    """A secret file must be readable by its owner only (like ssh's private keys)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise ConfigError(f"{where} secret_file: cannot read {path!r}: {e.strerror}") from None
    if mode & 0o077:
        raise ConfigError(
            f"{where} secret_file: {path!r} can be read or changed by other users "
            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )


def _resolve_secret(cluster: ServerClusterSection, origin: str) -> str:
    secret, secret_file = cluster.secret, cluster.secret_file
    where = f"{origin}: [cluster]"
    if secret and secret_file:
        raise ConfigError(f"{where} secret_file: give either secret or secret_file, not both")
    if secret_file:
        _check_private(secret_file, where)
        try:
            with open(secret_file, encoding="utf-8") as f:
                secret = f.read().strip()
        except OSError as e:
            raise ConfigError(f"{where} secret_file: cannot read {secret_file!r}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{where} secret_file: {secret_file!r} is not UTF-8 text") from None
        key = "secret_file"
    elif secret:
        key = "secret"
    else:
        raise ConfigError(f"{where} secret: missing required key (or give secret_file)")
    if len(secret) < cluster_config.MIN_SECRET:
        raise ConfigError(
            f"{where} {key}: the secret must be at least {cluster_config.MIN_SECRET} characters long"
        )
    return secret


def cluster_settings(config: ServerConfig, origin: str = "<config>") -> cluster_config.ClusterSettings:
    return cluster_config.settings(config.cluster, config.server.id, origin)
