"""The client daemon's logic: session, presence heartbeats, reconnect, peer messages, local state.

``ClientDaemon`` is the one object that knows the user: its home (keys,
state, images, ledger), its session with the cloud, its peer listener. The
stories (``cloudp2p.client.stories``) use it through narrow parts; it calls them
back only through its ``events`` (``DaemonEvents``: which story handles a peer
message, the cloud is back), given when ``cloudp2p.client.app`` builds it.

Session and presence (docs/client.md draws it)::

    unregistered --register--> signed_out --login--> signed_in --logout/shutdown--> signed_out
                                   ^                    |  heartbeat every `heartbeat_interval`
                                   '--token refused-----'  cloud silent: unreachable, retry with
                                                           backoff up to `reconnect_max`, then
                                                           fetch the queued messages on return

Other users, their keys and the signed messages to and from them are the
daemon's peer post (``cloudp2p.client.post.PeerPost``, a part of this class
kept in its own module). ``state.json`` is written off the reactor, batched
(``CoalescingWriter``).
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, threads
from twisted.logger import Logger

from cloudp2p.client import errors as cerr
from cloudp2p.client import identity as keyfile
from cloudp2p.client.cloud import Cloud
from cloudp2p.client.config import ClientConfig
from cloudp2p.client.home import Home
from cloudp2p.client.identity import unb64
from cloudp2p.client.known_keys import KnownKeys
from cloudp2p.client.lookup_cache import LookupCache
from cloudp2p.client.peer import PeerMessenger
from cloudp2p.client.post import LOOKUP_BURST, LOOKUP_INTERVAL, UNKNOWN_TTL, DaemonEvents, NoEvents, PeerPost
from cloudp2p.client.state import State
from cloudp2p.client.writer import CoalescingWriter
from cloudp2p.encryption.keys import UserKeys
from cloudp2p.errors import CloudUnreachable, RequestFailed
from cloudp2p.routing.ratelimit import RateLimits

# Codes with which the directory says the session is gone (log in again).
SESSION_GONE = {"not_signed_in", "session_expired", "bad_token"}

# A heartbeat in every DRAIN_EVERY also fetches queued messages: a sender that could not reach
# us peer to peer (a stale address, a lost datagram) queued its message while we were online.
DRAIN_EVERY = 5

RunBlocking = Callable[..., defer.Deferred]


def _thread_runner(reactor: Any) -> RunBlocking:
    def run(f: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args, **kwargs)

    return run


class ClientDaemon(PeerPost):
    """The session part of the daemon (this module) and its peer post (``post.PeerPost``)."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        home: Home,
        config: ClientConfig,
        *,
        cloud: Any = None,
        transfers: Any = None,
        run_blocking: RunBlocking | None = None,
        listen_udp: Callable[..., Any] | None = None,
        wall_clock: Callable[[], float] = time.time,
        events: DaemonEvents | None = None,
    ) -> None:
        self.reactor = reactor
        self.events: DaemonEvents = events or NoEvents()
        self.home = home
        self.config = config
        self.cloud = cloud
        self.transfers = transfers
        self.run_blocking = run_blocking or _thread_runner(reactor)
        self._listen_udp = listen_udp or (
            lambda port, proto, interface: reactor.listenUDP(
                port, proto, interface=interface, maxPacketSize=proto.maxPacketSize
            )
        )
        self.wall_clock = wall_clock
        self.identity: UserKeys | None = None
        self.state: State | None = None
        self.session: dict[str, Any] = {}
        self.messenger: PeerMessenger | None = None
        self.peer_port: Any = None
        self.reachable: bool | None = None
        self.last_contact: float | None = None
        self._router: Any = None
        self._heartbeat_call: Any = None
        self._backoff = 0.0
        # canonical username -> lookup_user record (keys, id); names the directory does not know
        self.lookups = LookupCache(reactor.seconds, unknown_ttl=UNKNOWN_TTL)
        self._lookup_limit = RateLimits(LOOKUP_BURST, LOOKUP_INTERVAL, clock=reactor.seconds, max_keys=1)
        self._lookup_source_limit = RateLimits(LOOKUP_BURST, LOOKUP_INTERVAL, clock=reactor.seconds)
        # what admit_peer refused, and the lookups made (counters command, tests, fuzzer)
        self.guard: collections.Counter[str] = collections.Counter()
        self.known_keys: KnownKeys | None = None
        self.state_writer: CoalescingWriter | None = None
        self._keys_writer: CoalescingWriter | None = None
        self._applying: dict[str, defer.Deferred[Any]] = {}
        self._draining: defer.Deferred[list[str]] | None = None
        self._stopping = False
        self._beats = 0
        self._catch_up = True  # fetch queued messages after the first heartbeat that gets through
        self.state_listeners: list[Callable[[str], None]] = []  # told each changed state section

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        self.home.create()
        self.identity = keyfile.load_or_create(self.home)
        state = State(self.home, self.state_listeners, save=lambda: self.state_writer.changed())
        self.state_writer = CoalescingWriter(
            self.reactor, self.run_blocking, self.home.state_file, state.encoded
        )
        self.state = state
        known = KnownKeys(self.home, lambda: self._keys_writer.changed(), wall_clock=self.wall_clock)
        self.known_keys = known
        self._keys_writer = CoalescingWriter(
            self.reactor, self.run_blocking, known.path, lambda: self.home_json(known.snapshot())
        )
        self.session = self.home.read_json(self.home.session_file, {}) or {}
        if self.cloud is None:
            from cloudp2p.routing.client import ClientRouter

            self._router = ClientRouter(
                self.reactor, self.config.servers, timeout=self.config.request_timeout
            )
            self._router.start()
            self.cloud = Cloud(self._router, timeout=self.config.request_timeout)
        if self.transfers is None:
            self.transfers = self._make_transfers()
        self.messenger = PeerMessenger(
            self.reactor,
            self.identity,
            lambda: self.session.get("username"),
            self.resolve_key,
            self.apply_message,
            admit=self.admit_peer,
        )
        self.peer_port = self._listen_udp(0, self.messenger.protocol, self.config.peer_host)
        self.log.info(
            "client daemon for {user} in {home}; peer listener on {addr}",
            user=self.session.get("username") or "(nobody yet)",
            home=str(self.home.path),
            addr=self.peer_address,
        )
        if self.session.get("token"):
            self._schedule_heartbeat(0)

    def _make_transfers(self) -> Any:
        from cloudp2p.transfer import TransferManager

        return TransferManager(self.reactor, config=self.config.transfer)

    async def stop(self) -> None:
        self._stopping = True
        if self._heartbeat_call is not None and self._heartbeat_call.active():
            self._heartbeat_call.cancel()
        self._heartbeat_call = None
        if self.peer_port is not None:
            await defer.maybeDeferred(self.peer_port.stopListening)
            self.peer_port = None
        close = getattr(self.transfers, "close", None) or getattr(self.transfers, "stop", None)
        if close is not None:
            try:
                await defer.maybeDeferred(close)
            except Exception:
                self.log.failure("closing the transfers failed")
        if self._router is not None:
            await self._router.stop()
        for writer in (self.state_writer, self._keys_writer):
            if writer is not None:
                await writer.flushed()
                writer.stop()

    @staticmethod
    def home_json(obj: Any) -> bytes:
        import json

        return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()

    async def saved(self) -> None:
        """Wait until every change made so far to the state and the known keys is on disk."""
        for writer in (self.state_writer, self._keys_writer):
            if writer is not None:
                await writer.flushed()

    def saving(self, commands: dict[str, Any]) -> dict[str, Any]:
        """``commands`` whose replies wait until their changes are on disk (control socket, web)."""

        def wrap(command: Any) -> Any:
            async def run(args: dict[str, Any], progress: Any) -> Any:
                try:
                    return await command(args, progress)
                finally:
                    await self.saved()

            return run

        return {name: wrap(command) for name, command in commands.items()}

    @property
    def peer_address(self) -> tuple[str, int] | None:
        if self.peer_port is None:
            return None
        h = self.peer_port.getHost()
        return h.host, h.port

    # -- session -------------------------------------------------------------------------------------

    @property
    def username(self) -> str | None:
        return self.session.get("username")

    @property
    def user_id(self) -> str | None:
        return self.session.get("user_id")

    @property
    def token(self) -> str | None:
        return self.session.get("token")

    def require_registered(self) -> None:
        if not self.username:
            raise cerr.NotRegistered()

    def require_token(self) -> str:
        self.require_registered()
        token = self.token
        if not token:
            raise cerr.NotSignedIn()
        return token

    def save_session(self, **changes: Any) -> None:
        self.session.update(changes)
        self.session = {k: v for k, v in self.session.items() if v is not None}
        self.home.write_json(self.home.session_file, self.session)

    def signed_in(self, reply: dict[str, Any]) -> None:
        self.save_session(
            username=reply["username"],
            user_id=reply["user_id"],
            token=reply["token"],
            expires=reply.get("expires"),
        )
        self._mark_reachable(True)
        self._backoff = 0.0
        self._schedule_heartbeat(self.config.heartbeat_interval)

    def signed_out(self, why: str) -> None:
        if self.token:
            self.log.info("signed out: {why}", why=why)
        self.save_session(token=None, expires=None)
        if self._heartbeat_call is not None and self._heartbeat_call.active():
            self._heartbeat_call.cancel()
        self._heartbeat_call = None

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A cloud request that keeps the reachability flag and the session current."""
        try:
            result = await getattr(self.cloud, method)(*args, **kwargs)
        except CloudUnreachable:
            self._mark_reachable(False)
            raise
        except RequestFailed as e:
            self._mark_reachable(True)
            if e.code in SESSION_GONE and self.token:
                self.signed_out(f"the cloud ended the session ({e.code})")
                raise cerr.NotSignedIn("(the session ended; log in again)") from None
            raise
        self._mark_reachable(True)
        return result

    def _mark_reachable(self, reachable: bool) -> None:
        was = self.reachable
        self.reachable = reachable
        if reachable:
            self.last_contact = self.wall_clock()
        if was is False and reachable:
            self.log.info("the cloud is reachable again")
            self._catch_up = True
        elif was is not False and not reachable:
            self.log.warn("the cloud is unreachable; retrying in the background")  # noqa: G010

    # -- heartbeats and reconnect --------------------------------------------------------------------

    def _schedule_heartbeat(self, delay: float) -> None:
        if self._stopping:
            return
        if self._heartbeat_call is not None and self._heartbeat_call.active():
            self._heartbeat_call.cancel()
        self._heartbeat_call = self.reactor.callLater(delay, self._heartbeat)

    def _heartbeat(self) -> None:
        self._heartbeat_call = None
        defer.Deferred.fromCoroutine(self.heartbeat_once())

    async def heartbeat_once(self) -> None:
        token = self.token
        addr = self.peer_address
        if not token or addr is None:
            return
        delay = self.config.heartbeat_interval
        try:
            await self.call("heartbeat", token, addr[0], addr[1])
            self._backoff = 0.0
            self._beats += 1
            if self._catch_up or self._beats % DRAIN_EVERY == 0:
                self._catch_up = False
                self._drain_in_background()
                self.events.back_online()
        except CloudUnreachable:
            self._backoff = min(
                self.config.reconnect_max, max(self.config.heartbeat_interval, self._backoff * 2)
            )
            delay = self._backoff
        except cerr.NotSignedIn:
            return
        except RequestFailed as e:
            self.log.warn("heartbeat refused: {error}", error=str(e))  # noqa: G010
        except Exception:
            self.log.failure("heartbeat failed")
        if self.token == token:
            self._schedule_heartbeat(delay)

    # -- blocking helpers ----------------------------------------------------------------------------

    async def read_file(self, path: str | os.PathLike[str], limit: int | None = None) -> bytes:
        def read() -> bytes:
            with open(path, "rb") as f:
                data = f.read(limit + 1 if limit is not None else -1)
            return data

        try:
            data = await self.run_blocking(read)
        except FileNotFoundError:
            raise cerr.ClientError(f"({path}: no such file)") from None
        except IsADirectoryError:
            raise cerr.ClientError(f"({path} is a directory)") from None
        except OSError as e:
            raise cerr.ClientError(f"({path}: {e.strerror})") from None
        if limit is not None and len(data) > limit:
            raise cerr.InvalidArgument(f"({path} is larger than {limit} bytes)")
        return data

    async def write_file(self, path: str | os.PathLike[str], data: bytes) -> None:
        await self.run_blocking(self.home.write_bytes, path, data)

    def owner_public(self, info: dict[str, Any], which: str) -> bytes:
        return unb64(info["keys"][which], length=32)
