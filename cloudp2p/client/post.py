"""The daemon's peer post: other users' records and pinned keys, signed messages to and from them.

``PeerPost`` is a part of ``ClientDaemon`` (it is mixed into it) kept in its own module: the
session half lives in ``daemon.py``. Peer messages (``cloudp2p.client.peer``) arrive directly
(UDP) or through the directory's queue; both go through ``apply_message``, which applies each
message id exactly once and hands it to the story that handles its type (``DaemonEvents``,
given by ``cloudp2p.client.app``).

Anyone can send a datagram to the peer port, from any source address they claim (issue 11).
``admit_peer`` decides, before any work, whether a datagram deserves a directory lookup of its
sender: only a sender this user has business with (or anyone asking to share), at most
``LOOKUP_BURST`` at once and one per ``LOOKUP_INTERVAL`` s in all (and per source address).
Records are cached by canonical name (``LookupCache``) and keys pinned (``KnownKeys``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from twisted.internet import defer

from cloudp2p.client import errors as cerr
from cloudp2p.client.known_keys import fingerprint
from cloudp2p.client.peer import PeerMessage, PeerMessageError, valid_username
from cloudp2p.directory.validate import username_key
from cloudp2p.errors import RequestFailed

UNKNOWN_TTL = 60.0
# Directory lookups that unsigned peer datagrams may cause: LOOKUP_BURST at once, then one per
# LOOKUP_INTERVAL seconds, in all and per source address (a flood of made-up senders costs the
# cloud a few lookups, not one each).
LOOKUP_BURST = 8
LOOKUP_INTERVAL = 1.0
MAX_CLOCK_AHEAD = 24 * 3600.0  # a message dated further in the future is refused


PeerHandler = Callable[[PeerMessage, tuple[str, int] | None], Awaitable[str | None]]


class DaemonEvents(Protocol):
    """What the daemon asks of the stories (``cloudp2p.client.app.ClientApp``), given at construction."""

    def peer_handler(self, kind: str) -> PeerHandler | None:
        """The handler of verified peer messages of ``kind``, or None: applied as nothing to do."""

    def back_online(self) -> None:
        """The cloud answers again (or it is time to look): work that waited for it may resume."""


class NoEvents:
    """A daemon without stories (tools, tests of the daemon alone)."""

    def peer_handler(self, kind: str) -> PeerHandler | None:
        return None

    def back_online(self) -> None:
        pass


class PeerPost:
    """Other users and the messages to and from them; the attributes are the daemon's (``daemon.py``)."""

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
            handler = self.events.peer_handler(msg.type)
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
