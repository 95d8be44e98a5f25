"""The client daemon's logic: session, presence heartbeats, reconnect, peer messages, local state.

``ClientDaemon`` is the one object that knows the user: its home (keys,
state, images, ledger), its session with the cloud, its peer listener. The
stories (commands) live in ``cloudp2p.client.commands`` and call the methods
here; ``tap.py`` wraps the daemon in a twistd service.

Session and presence (docs/client.md draws it)::

    unregistered --register--> signed_out --login--> signed_in --logout/shutdown--> signed_out
                                   ^                    |  heartbeat every `heartbeat_interval`
                                   '--token refused-----'  cloud silent: unreachable, retry with
                                                           backoff up to `reconnect_max`, then
                                                           fetch the queued messages on return

Peer messages (``cloudp2p.client.peer``) arrive directly (UDP) or through the
directory's queue; both go through ``apply_message``, which applies each
message id exactly once.

Anyone can send a datagram to the peer port, from any source address they
claim (issue 11). ``admit_peer`` decides, before any work, whether a datagram
deserves a directory lookup of its sender: only a sender this user has
business with (or anyone asking to share), at most ``LOOKUP_BURST`` at once and
one per ``LOOKUP_INTERVAL`` s in all (and per source address). Records are
cached by canonical name (``LookupCache``), keys pinned (``KnownKeys``), and
``state.json`` is written off the reactor, batched (``CoalescingWriter``).
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
from cloudp2p.client.known_keys import KnownKeys, fingerprint
from cloudp2p.client.lookup_cache import LookupCache
from cloudp2p.client.peer import PeerMessage, PeerMessageError, PeerMessenger, valid_username
from cloudp2p.client.state import State
from cloudp2p.client.writer import CoalescingWriter
from cloudp2p.directory.validate import username_key
from cloudp2p.encryption.keys import UserKeys
from cloudp2p.errors import CloudUnreachable, RequestFailed
from cloudp2p.routing.ratelimit import RateLimits

# Codes with which the directory says the session is gone (log in again).
SESSION_GONE = {"not_signed_in", "session_expired", "bad_token"}

# A heartbeat in every DRAIN_EVERY also fetches queued messages: a sender that could not reach
# us peer to peer (a stale address, a lost datagram) queued its message while we were online.
DRAIN_EVERY = 5
UNKNOWN_TTL = 60.0
# Directory lookups that unsigned peer datagrams may cause: LOOKUP_BURST at once, then one per
# LOOKUP_INTERVAL seconds, in all and per source address (a flood of made-up senders costs the
# cloud a few lookups, not one each).
LOOKUP_BURST = 8
LOOKUP_INTERVAL = 1.0
MAX_CLOCK_AHEAD = 24 * 3600.0  # a message dated further in the future is refused

RunBlocking = Callable[..., defer.Deferred]


def _thread_runner(reactor: Any) -> RunBlocking:
    def run(f: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args, **kwargs)

    return run


class ClientDaemon:
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
    ) -> None:
        self.reactor = reactor
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
        self.online_hooks: list[Callable[[], None]] = []  # run when the daemon is back in touch
        self.state_listeners: list[Callable[[str], None]] = []  # told each changed state section
        self.web_link: Callable[[], dict[str, Any]] | None = None  # set by the web app, if it runs
        self.stop_requested: Callable[[], None] = lambda: None
        # hooks for the stories (commands.py) to react to messages
        self.handlers: dict[str, Callable[[PeerMessage, tuple[str, int] | None], Any]] = {}

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
                for hook in self.online_hooks:
                    hook()
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

    # -- keys of other users -------------------------------------------------------------------------

    async def lookup(self, username: str, *, fresh: bool = False) -> dict[str, Any]:
        """The directory's record of ``username`` (keys, id, presence); raises UnknownUser.

        The keys must be the ones pinned for that user (``KnownKeys``), else ``KeyChanged``.
        """
        token = self.require_token()
        if not fresh:
            cached = self.lookups.get(username)
            if cached is not None:
                return cached
        found = await self._directory_record(token, username)
        assert self.known_keys is not None
        self.known_keys.check(found)
        self.lookups.put({k: found[k] for k in ("user_id", "username", "keys")})
        return found

    async def _directory_record(self, token: str, username: str) -> dict[str, Any]:
        """``lookup_user``, with the reply checked: the name asked for, the directory's rules."""
        self.guard["directory_lookups"] += 1
        try:
            found = await self.call("lookup_user", token, username=username)
        except RequestFailed as e:
            if e.code in ("user_not_found", "bad_request"):
                self.lookups.mark_unknown(username)
                raise cerr.UnknownUser(f"({username!r})") from None
            raise
        keys = found.get("keys") if isinstance(found, dict) else None
        name = found.get("username") if isinstance(found, dict) else None
        if (
            not valid_username(name)
            or username_key(name) != username_key(username)
            or not isinstance(found.get("user_id"), str)
            or not isinstance(keys, dict)
            or not all(isinstance(keys.get(k), str) for k in ("x25519", "ed25519"))
        ):
            raise RequestFailed("bad_reply", f"the directory's record of {username!r} is unusable")
        return found

    async def trust(self, username: str) -> dict[str, Any]:
        """Pin the keys the directory has for ``username`` now (`cloudp2p trust USER`)."""
        token = self.require_token()
        found = await self._directory_record(token, username)
        assert self.known_keys is not None
        previous = self.known_keys.trust(found)
        self.lookups.put({k: found[k] for k in ("user_id", "username", "keys")})
        now = fingerprint(found["keys"]["ed25519"])
        before = fingerprint(previous["ed25519"]) if previous is not None else None
        return {
            "user": found["username"],
            "user_id": found["user_id"],
            "ed25519": now,
            "previous": before,
            "changed": before is not None and (before != now or previous["user_id"] != found["user_id"]),
        }

    def _is_me(self, username: str) -> bool:
        return bool(self.username) and username_key(username) == username_key(self.username or "")

    async def resolve_key(self, username: str, *, strict: bool = False) -> str | None:
        """The Ed25519 key (base64) pinned and registered for ``username``; None if unknown.

        Unknown names are remembered for ``UNKNOWN_TTL`` seconds, so that datagrams claiming to
        come from made-up users do not each cost a directory lookup. A changed key gives None
        (the message is dropped), or ``KeyChanged`` with ``strict``.
        """
        if self._is_me(username) and self.identity is not None:
            return self.identity.public.to_json()["ed25519"]
        if self.lookups.is_unknown(username):
            return None
        try:
            return (await self.lookup(username))["keys"]["ed25519"]
        except cerr.UnknownUser:
            return None
        except cerr.KeyChanged as e:
            if strict:
                raise
            self.log.warn("dropped a message from {user}: {why}", user=username, why=str(e))  # noqa: G010
            return None

    def admit_peer(self, msg: PeerMessage, addr: tuple[str, int]) -> bool:
        """Cheap checks of a datagram anyone could have sent, before any lookup or signature check."""
        assert self.state is not None
        now = self.wall_clock()
        if self.state.too_old(msg.at, now) or msg.at > now + MAX_CLOCK_AHEAD:
            self.guard["refused_out_of_date"] += 1
            return False
        if self._is_me(msg.sender) or self.lookups.get(msg.sender) is not None:
            return True  # the key is at hand: the signature check decides
        if self.lookups.is_unknown(msg.sender):
            self.guard["refused_unknown_sender"] += 1
            return False
        if not self.plausible_sender(msg):
            self.guard["refused_implausible"] += 1
            return False
        if not self._lookup_source_limit.allow(addr[0]) or not self._lookup_limit.allow("all"):
            self.guard["refused_lookups_limited"] += 1
            return False
        return True

    def plausible_sender(self, msg: PeerMessage) -> bool:
        """Could ``msg.sender`` have a reason to send ``msg.type`` to this user? (No lookup needed.)"""
        assert self.state is not None
        sender = username_key(msg.sender)

        def has(section: str, field: str) -> bool:
            return self.state.count(section, lambda r: username_key(str(r.get(field, ""))) == sender) > 0

        if msg.type == "share_request":
            return True  # anyone signed in may ask for a published image (rate-limited above)
        if msg.type in ("share_offer", "share_rejected"):
            return has("outbox", "to")
        if msg.type == "share_done":
            return has("inbox", "from")
        if msg.type == "rights_update":
            return has("received", "owner") or has("outbox", "to")
        return False

    # -- sending messages ----------------------------------------------------------------------------

    async def send_message(
        self, recipient: str, type: str, body: dict[str, Any], *, queue: bool = True
    ) -> str:
        """Deliver a signed message: peer to peer if the user is online and answers, else queued.

        Returns ``"peer"`` or ``"queued"``; raises ``UserOffline`` when ``queue`` is False
        and the peer did not acknowledge.
        """
        token = self.require_token()
        assert self.messenger is not None
        info = await self.lookup(recipient, fresh=True)
        recipient = info["username"]  # the directory's spelling: names are case-insensitive
        msg = self.messenger.message(type, recipient, body)
        if info.get("online") and info.get("host") and info.get("port"):
            if await self.messenger.send(msg, (info["host"], int(info["port"])), self.config.peer_timeout):
                return "peer"
            self.log.info("{user} did not acknowledge {type}; queueing it", user=recipient, type=type)
        if not queue:
            raise cerr.UserOffline(f"({recipient} did not answer)")
        await self.call("queue_message", token, recipient, type, msg.to_json())
        return "queued"

    # -- receiving messages --------------------------------------------------------------------------

    async def apply_message(self, msg: PeerMessage, addr: tuple[str, int] | None) -> str | None:
        """Apply a verified message at most once; returns a sentence for the user, or None."""
        assert self.state is not None
        if self.state.applied(msg.id):
            return None
        running = self._applying.get(msg.id)
        if running is not None:
            await running
            return None
        done: defer.Deferred[Any] = defer.Deferred()
        self._applying[msg.id] = done
        try:
            now = self.wall_clock()
            if self.state.too_old(msg.at, now):
                self.log.info(
                    "ignored a {type} message from {sender}: too old", type=msg.type, sender=msg.sender
                )
                return None
            handler = self.handlers.get(msg.type)
            if handler is None:
                self.log.info("no handler for {type} messages", type=msg.type)
                self.state.mark_applied(msg.id, now, msg.at)
                await self.saved()
                return None
            description = await handler(msg, addr)
            self.state.mark_applied(msg.id, now, msg.at)
            await self.saved()  # the ack (direct or to the queue) only once it is on disk
            self.log.info(
                "applied {type} {id} from {sender} ({via}): {what}",
                type=msg.type,
                id=msg.id,
                sender=msg.sender,
                via="peer" if addr is not None else "directory queue",
                what=description or "nothing to do",
            )
            return description
        finally:
            del self._applying[msg.id]
            done.callback(None)

    def _drain_in_background(self) -> None:
        d = defer.Deferred.fromCoroutine(self.drain_queue())
        d.addErrback(
            lambda f: self.log.info("could not fetch queued messages yet: {why}", why=f.getErrorMessage())
        )

    async def drain_queue(self) -> list[str]:
        """Fetch, verify, apply and acknowledge every message waiting in the directory."""
        if self._draining is not None:
            await self._draining
            return []
        self._draining = defer.Deferred()
        try:
            return await self._drain()
        finally:
            d, self._draining = self._draining, None
            d.callback([])

    async def _drain(self) -> list[str]:
        applied: list[str] = []
        after = 0
        for _ in range(100):
            token = self.require_token()
            messages, more = await self.call("fetch_queued", token, after)
            done: list[int] = []
            for item in messages:
                after = max(after, int(item["id"]))
                try:
                    msg = PeerMessage.from_json(item.get("body"))
                except PeerMessageError as e:
                    self.log.warn(  # noqa: G010
                        "dropped a malformed queued message {id}: {why}", id=item.get("id"), why=e.detail
                    )
                    done.append(int(item["id"]))
                    continue
                if msg.recipient != self.username or msg.sender != item.get("from_username"):
                    self.log.warn(  # noqa: G010
                        "dropped queued message {id}: wrong sender or recipient", id=item.get("id")
                    )
                    done.append(int(item["id"]))
                    continue
                try:
                    key = await self.resolve_key(msg.sender, strict=True)
                except cerr.KeyChanged as e:
                    # kept in the queue (not acknowledged) until the user runs `cloudp2p trust`
                    self.log.warn("kept queued message {id}: {why}", id=item.get("id"), why=str(e))  # noqa: G010
                    continue
                if key is None or not msg.verify(key):
                    self.log.warn("dropped queued message {id}: bad signature", id=item.get("id"))  # noqa: G010
                    done.append(int(item["id"]))
                    continue
                description = await self.apply_message(msg, None)
                if description:
                    applied.append(description)
                done.append(int(item["id"]))
            if done:
                await self.call("ack_queued", token, done)
            if not more:
                break
        return applied

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
