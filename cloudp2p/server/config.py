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
    Field,
    Schema,
    Section,
    at_least,
    format_hostport,
    hostport,
    in_range,
    read_toml,
    seconds,
)
from cloudp2p.directory.config import SECTION as DIRECTORY_SECTION
from cloudp2p.directory.config import check_section as check_directory
from cloudp2p.encryption.config import SECTION as ENCRYPTION_SECTION
from cloudp2p.errors import ConfigError
from cloudp2p.membership import config as cluster_config
from cloudp2p.transfer.config import SECTION as TRANSFER_SECTION


def _server_id(value: int) -> int:
    if value < 1:
        raise ValueError(f"must be an integer >= 1, got {value}")
    return value


_count = at_least(1)
_buffer = at_least(65536, "bytes")


SECTION = Section(
    name="server",
    required=True,
    doc="this server: its id, its client socket and the request router's limits",
    fields={
        "id": Field(int, check=_server_id, doc="this server's id (>= 1), unique in the cloud"),
        "client_listen": Field(str, check=hostport, doc="host:port of the socket clients send requests to"),
        "state_dir": Field(str, default="", doc="directory for this server's files (other areas use it)"),
        "receive_buffer": Field(int, default=4 << 20, check=_buffer, doc="SO_RCVBUF of the client socket"),
        "max_pending": Field(int, default=10_000, check=_count, doc="requests tracked and not yet done"),
        "pending_ttl": Field(
            (int, float),
            default=60.0,
            check=seconds,
            doc="seconds before an unfinished request is forgotten",
        ),
        "max_done": Field(int, default=20_000, check=_count, doc="replies kept to answer retries"),
        "done_ttl": Field((int, float), default=120.0, check=seconds, doc="seconds a reply is kept"),
        "max_running": Field(int, default=256, check=_count, doc="handlers running at once"),
        "resend_after": Field(
            (int, float), default=0.5, check=seconds, doc="coordinator re-sends an unfinished assignment"
        ),
        "outstanding_weight": Field(
            (int, float), default=0.25, check=in_range(0, 100), doc="load per outstanding assignment"
        ),
        "work_threads": Field(int, default=2, check=in_range(1, 64), doc="threads for CPU-bound work"),
        "work_queue": Field(int, default=256, check=_count, doc="work requests allowed to wait for a thread"),
        "test_ops": Field(
            bool,
            default=False,
            doc="tests and benchmarks only: register the load-test op work and the recent_runs query",
        ),
        "max_pending_bytes": Field(
            int, default=64 << 20, check=at_least(65536, "bytes"), doc="bytes of pending requests kept"
        ),
        "max_done_bytes": Field(
            int, default=64 << 20, check=at_least(65536, "bytes"), doc="bytes of replies kept for retries"
        ),
        "cookie_ttl": Field(
            (int, float), default=600.0, check=in_range(10, 86400), doc="seconds an address cookie is good"
        ),
        "auth_source_burst": Field(
            int, default=10, check=in_range(1, 100_000), doc="sign_in/register one source may send at once"
        ),
        "auth_source_interval": Field(
            (int, float), default=2.0, check=in_range(0.0001, 3600), doc="then one per this many seconds"
        ),
        "auth_user_burst": Field(
            int, default=5, check=in_range(1, 100_000), doc="sign_in attempts for one user name at once"
        ),
        "auth_user_interval": Field(
            (int, float), default=10.0, check=in_range(0.0001, 3600), doc="then one per this many seconds"
        ),
    },
)


def _cluster_section() -> Section:
    """The membership owner's ``[cluster]`` section, plus ``secret_file`` as an alternative to ``secret``."""
    base = cluster_config.SECTION
    if "secret_file" in base.fields:
        return base
    fields = dict(base.fields)
    fields["secret"] = attrs.evolve(fields["secret"], default="", check=None)
    fields["secret_file"] = Field(str, default="", doc="file holding the cluster secret (instead of secret)")
    return attrs.evolve(base, fields=fields)


# The areas' sections, in file order; each is optional with defaults, and its keys arrive
# in Server.config["<name>"].
EXTRA_SECTIONS: list[Section] = [DIRECTORY_SECTION, TRANSFER_SECTION, ENCRYPTION_SECTION]


def schema() -> Schema:
    return Schema((SECTION, _cluster_section(), *EXTRA_SECTIONS))


def load(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read, validate and cross-check a server config file; ``ConfigError`` names file and key."""
    return validate(read_toml(path), os.fspath(path))


def validate(raw: dict[str, Any], origin: str = "<config>") -> dict[str, dict[str, Any]]:
    config = schema().validate(raw, origin)
    server, cluster = config["server"], config["cluster"]
    where = f"{origin}: [cluster]"
    if "peers" not in raw.get("cluster", {}):
        raise ConfigError(
            f'{where} peers: missing required key; list every other server as "ID@host:port" '
            f"(peers = [] for a one-server cloud)"
        )
    cluster["secret"] = _resolve_secret(cluster, origin)
    own_id = server["id"]
    listen = cluster["listen"]
    for peer_id, address in cluster["peers"].items():
        if peer_id != own_id and address == listen:
            raise ConfigError(
                f"{where} peers: server {peer_id} uses this server's listen address {format_hostport(listen)}"
            )
        if peer_id == own_id and address != listen and listen[1] != 0:
            raise ConfigError(
                f"{where} peers: this server's own id {own_id} is listed at {format_hostport(address)}, "
                f"but listen is {format_hostport(listen)}"
            )
    if server["client_listen"] == listen:
        raise ConfigError(
            f"{origin}: [server] client_listen: must differ from [cluster] listen ({format_hostport(listen)})"
        )
    _check_development_secret(config, origin)
    if server["state_dir"] and not os.path.isdir(server["state_dir"]):
        raise ConfigError(f"{origin}: [server] state_dir: {server['state_dir']!r} is not a directory")
    check_directory(config["directory"], origin)
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


def _check_development_secret(config: dict[str, dict[str, Any]], origin: str) -> None:
    """The development secret refuses to run on any address another machine could reach.

    It authenticates the servers to each other and keys the clients' address cookies: with a
    public secret, anyone could forge both.
    """
    cluster = config["cluster"]
    if cluster["secret"] not in DEVELOPMENT_SECRETS:
        return
    addresses = [
        ("[server] client_listen", config["server"]["client_listen"][0]),
        ("[cluster] listen", cluster["listen"][0]),
        *((f"[cluster] peers ({peer})", address[0]) for peer, address in cluster["peers"].items()),
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


def _resolve_secret(cluster: dict[str, Any], origin: str) -> str:
    secret, secret_file = cluster.get("secret", ""), cluster.pop("secret_file", "")
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


def cluster_settings(
    config: dict[str, dict[str, Any]], origin: str = "<config>"
) -> cluster_config.ClusterSettings:
    return cluster_config.settings(config["cluster"], config["server"]["id"], origin)
