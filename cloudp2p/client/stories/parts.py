"""What a story may use of the daemon, each part by the interface it needs.

The client daemon (``cloudp2p.client.daemon.ClientDaemon``) is all four parts at
once today; a story names only the parts it uses, so that what it may touch is
written down and a test can hand it something smaller. No story imports the daemon.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from typing import Any, Protocol

import attrs
from twisted.internet import defer

from cloudp2p.client.config import ClientConfig
from cloudp2p.client.home import Home
from cloudp2p.client.state import State
from cloudp2p.encryption.keys import UserKeys

JSONDict = dict[str, Any]
Progress = Callable[[str, int, int], None]


class Session(Protocol):
    """Who the user is here: the home, the keys, the session with the cloud, the local state."""

    home: Home
    config: ClientConfig
    identity: UserKeys | None
    state: State | None
    reachable: bool | None

    @property
    def username(self) -> str | None: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def token(self) -> str | None: ...
    @property
    def peer_address(self) -> tuple[str, int] | None: ...

    def require_registered(self) -> None: ...
    def require_token(self) -> str: ...
    def save_session(self, **changes: Any) -> None: ...
    def signed_in(self, reply: JSONDict) -> None: ...
    def signed_out(self, why: str) -> None: ...


class Cloud(Protocol):
    """Requests to the cloud (keeping reachability and the session current) and the queued messages."""

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any: ...
    async def drain_queue(self) -> list[str]: ...


class Peers(Protocol):
    """Other users: their directory records and pinned keys, signed messages to them."""

    messenger: Any  # the PeerMessenger: ``message(type, recipient, body)``, ``send(msg, addr, timeout)``
    guard: collections.Counter[str]
    lookups: Any

    async def lookup(self, username: str, *, fresh: bool = False) -> JSONDict: ...
    async def trust(self, username: str) -> JSONDict: ...
    async def send_message(self, recipient: str, type: str, body: JSONDict, *, queue: bool = True) -> str: ...
    def owner_public(self, info: JSONDict, which: str) -> bytes: ...


class Work(Protocol):
    """The clock, blocking work off the reactor, files in the home, transfers."""

    reactor: Any
    transfers: Any
    state_writer: Any
    wall_clock: Callable[[], float]
    run_blocking: Callable[..., defer.Deferred]

    async def read_file(self, path: str | os.PathLike[str], limit: int | None = None) -> bytes: ...
    async def write_file(self, path: str | os.PathLike[str], data: bytes) -> None: ...


@attrs.frozen
class Parts:
    session: Session
    cloud: Cloud
    peers: Peers
    work: Work

    @classmethod
    def of(cls, daemon: Any) -> Parts:
        """The parts of a daemon that is all of them (``ClientDaemon``)."""
        return cls(daemon, daemon, daemon, daemon)


class Story:
    """A group of commands and peer messages, with the parts it uses as attributes."""

    def __init__(self, parts: Parts) -> None:
        self.session = parts.session
        self.cloud = parts.cloud
        self.peers = parts.peers
        self.work = parts.work

    @property
    def state(self) -> State:
        state = self.session.state
        assert state is not None, "the daemon has not started"
        return state
