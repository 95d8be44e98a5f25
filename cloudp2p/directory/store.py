"""The directory ``Store``: every directory operation as one database transaction.

``open_store(section, reactor)`` returns a ``Store`` at once; the schema is
created or upgraded on a pool thread in the background, and every operation
waits for that first. Each public method is ``async`` and takes values already
checked by ``cloudp2p.directory.validate`` (the op handlers in ``ops.py`` do
that); it raises ``OpError`` for what the user must hear (``username_taken``,
``not_signed_in``, ...).

Exactly-once effects: a mutating operation that is given a ``request_id``
first looks the id up in the ``journal`` table; if it is there, the recorded
reply is returned and nothing else happens. Otherwise it makes its change and
records ``(request_id -> reply)`` in the same transaction, so a request that
runs twice (a server died before replying and the router re-assigned it) has
one effect and one answer. Two servers running the same request at the same
moment collide on a unique key; the loser's transaction rolls back, runs again
and finds the winner's reply in the journal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from cloudp2p.directory import passwords, schema
from cloudp2p.directory.config import DirectorySettings
from cloudp2p.directory.db import Database, Tx
from cloudp2p.directory.thumbnails import check_thumbnail
from cloudp2p.directory.token_seal import new_token
from cloudp2p.ops import OpError

PAGE_BUDGET = 50_000  # bytes of JSON in one page: the reply datagram may hold 60,000 with its envelope
_IMAGE_ROWS_CAP = 600  # more image entries than fit in PAGE_BUDGET: each takes more than 90 bytes


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def request_key(request_id: str) -> str:
    return hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).hexdigest()


def json_size(value: Any) -> int:
    """Bytes of ``value`` as the router will likely send it (ASCII-escaped, default separators)."""
    return len(json.dumps(value))


def encode_cursor(user_id: str, image_id: str | None = None) -> str:
    """``u.<user>``: resume after that user; ``i.<user>.<image>``: resume inside it, after that image."""
    return f"u.{user_id}" if image_id is None else f"i.{user_id}.{image_id}"


def not_signed_in() -> OpError:
    return OpError("not_signed_in", "this request needs a valid session token; sign in first")


CRASH_ENV = "CLOUDP2P_DIRECTORY_CRASH"


def crash_hook(spec: str) -> Callable[[str], None]:
    """A ``fault_hook`` for crash tests of real servers: ``"register:committed:/tmp/once"``.

    At that point of that operation the process kills itself with SIGKILL, as ``kill -9`` would,
    but only if it is the first to create the marker file, so one server of a cloud dies and the
    others, started with the same environment, carry on. Set through ``CLOUDP2P_DIRECTORY_CRASH``.
    """
    op, point, marker = spec.split(":", 2)
    target = f"{op}:{point}"

    def hook(where: str) -> None:
        if where != target:
            return
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)

    return hook


class Store:
    """Users, sessions, presence, shared images and queued messages on one database."""

    log = Logger()

    def __init__(
        self,
        db: Database,
        reactor: Any,
        settings: DirectorySettings | None = None,
        *,
        cpu_threads: int = 2,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``settings``: the ``[directory]`` section (its limits and lifetimes are read from it)."""
        self.db = db
        self.reactor = reactor
        settings = settings or DirectorySettings()
        self.presence_ttl = settings.presence_ttl
        self.session_ttl = settings.session_ttl
        self.journal_ttl = settings.journal_ttl
        self.cleanup_interval = settings.cleanup_interval
        self.scrypt_n = settings.scrypt_n
        self.max_queue = settings.max_queue
        self.max_body = settings.max_body
        self.max_images = settings.max_images
        self._clock = clock or reactor.seconds
        self._cpu = ThreadPool(minthreads=0, maxthreads=cpu_threads, name="directory-cpu")
        self._cpu_started = False
        self._dummy_hash: str | None = None
        self._ready: Any = None  # None while migrating, then True or a Failure
        self._waiters: list[defer.Deferred[None]] = []
        self._cleanup: task.LoopingCall | None = None
        self._closed = False
        self._shutdown_trigger: Any = None
        # Test hook: ``fault_hook("register:journal_checked")`` runs on the database thread after the
        # journal look-up and before the change, ``"register:in_transaction"`` between an
        # operation's change and its journal record, ``"register:committed"`` on the reactor thread
        # after the commit and before the reply. See ``crash_hook``.
        self.fault_hook: Callable[[str], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Migrate the schema in the background (see ``when_ready``); then purge periodically."""
        # Pool threads keep a process alive: make sure they stop with the reactor even if the
        # owner forgets close().
        self._shutdown_trigger = self.reactor.addSystemEventTrigger("before", "shutdown", self.close)
        d = self.db.call(schema.migrate_database, self.db.dialect)
        d.addCallbacks(self._migrated, self._migration_failed)

    def _migrated(self, versions: tuple[int, int]) -> None:
        before, after = versions
        self.log.info(
            "directory ({backend}) ready, schema version {before} -> {after}",
            backend=self.db.dialect.name,
            before=before,
            after=after,
        )
        self._ready = True
        if not self._closed:
            self._cleanup = task.LoopingCall(self._purge_quietly)
            self._cleanup.clock = self.reactor
            self._cleanup.start(self.cleanup_interval, now=False)
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.callback(None)

    def _migration_failed(self, failure: Any) -> None:
        self.log.failure(
            "directory ({backend}) could not open its database", failure, backend=self.db.dialect.name
        )
        self._ready = failure
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.errback(failure)

    def when_ready(self) -> defer.Deferred[None]:
        """Fires when the schema is up to date; errbacks if the database could not be opened."""
        if self._ready is True:
            return defer.succeed(None)
        if self._ready is not None:
            return defer.fail(self._ready)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(d)
        return d

    async def fence(self, server_id: int) -> int:
        """Kill the database connections of server ``server_id`` (suspected dead or stopped).

        Its open transactions roll back and free their locks; see ``MySQLDialect.fence``.
        Runs on the reactor's thread pool, not on the database pool: the database threads
        may all be waiting for exactly those locks. 0 on SQLite (a stopped process holding
        the write lock cannot be fenced from another process) and when closed.
        """
        fence = getattr(self.db.dialect, "fence", None)
        if fence is None or self._closed:
            return 0
        from twisted.internet import threads

        return await threads.deferToThread(fence, server_id)

    def close(self) -> defer.Deferred[None]:
        """Stop the purge, wait for running transactions, close the connections. Idempotent."""
        if not self._closed:
            self._closed = True
            if self._shutdown_trigger is not None:
                try:
                    self.reactor.removeSystemEventTrigger(self._shutdown_trigger)
                except (ValueError, KeyError):
                    pass  # it is running now: this call is it
                self._shutdown_trigger = None
            if self._cleanup is not None and self._cleanup.running:
                self._cleanup.stop()
            self.db.close()
            if self._cpu_started:
                self._cpu.stop()
        return defer.succeed(None)

    async def _wait_ready(self) -> None:
        if self._closed:
            raise OpError("directory_unavailable", "this server is shutting down; try again")
        if self._ready is True:
            return
        try:
            await self.when_ready()
        except Exception:
            raise OpError(
                "directory_unavailable",
                "the directory database of this server cannot be opened; try again later",
            ) from None

    def _now(self) -> float:
        return float(self._clock())

    def _on_cpu(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._cpu_started:
            self._cpu_started = True
            self._cpu.start()
        return threads.deferToThreadPool(self.reactor, self._cpu, fn, *args, **kwargs)

    def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.db.run(fn, *args, write=False)

    def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.db.run(fn, *args, write=True)

    def _fault(self, where: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(where)

    async def _journaled(
        self, op: str, request_id: str | None, now: float, work: Callable[[Tx], dict]
    ) -> dict:
        """Run ``work`` in a write transaction, at most once per ``request_id`` (see the module doc)."""
        key = request_key(request_id) if request_id else None

        def recorded(tx: Tx) -> dict | None:
            row = tx.one("SELECT op, reply FROM journal WHERE request_key = ?", (key,))
            if row is None:
                return None
            if row[0] != op:
                raise OpError("request_id_reused", f"this request id was already used for {row[0]!r}")
            return json.loads(row[1])

        def txn(tx: Tx) -> dict:
            if key is not None and (reply := recorded(tx)) is not None:
                return reply
            self._fault(f"{op}:journal_checked")
            try:
                reply = work(tx)
            except OpError:
                # Another server may have run the same request and committed after our look-up
                # (MySQL's READ COMMITTED lets two transactions pass the check at once): its
                # change is what made ours fail, and its recorded reply is the answer.
                if key is not None and (reply := recorded(tx)) is not None:
                    return reply
                raise
            self._fault(f"{op}:in_transaction")
            if key is not None:
                tx.execute(
                    "INSERT INTO journal (request_key, op, reply, created) VALUES (?, ?, ?, ?)",
                    (key, op, json.dumps(reply), now),
                )
            return reply

        reply = await self._write(txn)
        self._fault(f"{op}:committed")
        return reply

    @staticmethod
    def _session(tx: Tx, th: str, now: float) -> str:
        row = tx.one("SELECT user_id FROM sessions WHERE token_hash = ? AND expires > ?", (th, now))
        if row is None:
            raise not_signed_in()
        return row[0]

    async def session_user(self, token: str) -> str:
        """The user id behind a valid session ``token``; ``OpError(not_signed_in)`` otherwise.

        For other areas' operations (``encrypt``) that act for a signed-in user."""
        if not isinstance(token, str) or not token:
            raise not_signed_in()
        await self._wait_ready()
        th, now = token_hash(token), self._now()
        return await self._read(lambda tx: self._session(tx, th, now))

    # -- users and sessions ----------------------------------------------------------------------

    async def register(
        self, request_id: str | None, username: str, password: str, keys: dict[str, str]
    ) -> dict:
        """A new user. ``username_taken`` if the name (in any case) exists already."""
        await self._wait_ready()
        pw_hash = await self._on_cpu(passwords.hash_password, password, n=self.scrypt_n)
        user_id = str(uuid.uuid4())
        now = self._now()

        def work(tx: Tx) -> dict:
            if tx.one("SELECT id FROM users WHERE username_key = ?", (username.lower(),)) is not None:
                raise OpError("username_taken", f"the username {username!r} is taken; choose another one")
            tx.execute(
                "INSERT INTO users (id, username, username_key, password, x25519, ed25519, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (user_id, username, username.lower(), pw_hash, keys["x25519"], keys["ed25519"], now),
            )
            return {"user_id": user_id, "username": username, "created": now}

        return await self._journaled("register", request_id, now, work)

    async def sign_in(
        self, username: str, password: str, *, host: str | None = None, port: int | None = None
    ) -> dict:
        """A new session token. ``bad_credentials`` for an unknown user or a wrong password alike.

        Not journaled: a second run only makes a second session that expires unused, and the
        journal would otherwise hold the token in clear.
        """
        await self._wait_ready()
        row = await self._read(
            lambda tx: tx.one(
                "SELECT id, username, password FROM users WHERE username_key = ?", (username.lower(),)
            )
        )
        if row is None:
            if self._dummy_hash is None:
                self._dummy_hash = await self._on_cpu(passwords.dummy_hash, self.scrypt_n)
            await self._on_cpu(passwords.verify_password, password, self._dummy_hash)
            raise OpError("bad_credentials", "unknown username or wrong password")
        user_id, stored_name, pw_hash = row
        if not await self._on_cpu(passwords.verify_password, password, pw_hash):
            raise OpError("bad_credentials", "unknown username or wrong password")
        upgraded = None
        if (passwords.cost(pw_hash) or 0) < self.scrypt_n:  # an older, cheaper hash: make it current
            upgraded = await self._on_cpu(passwords.hash_password, password, n=self.scrypt_n)
        token = new_token()
        th = token_hash(token)
        now = self._now()
        expires = now + self.session_ttl

        def work(tx: Tx) -> int:
            if upgraded is not None:
                tx.execute(
                    "UPDATE users SET password = ? WHERE id = ? AND password = ?",
                    (upgraded, user_id, pw_hash),
                )
            tx.execute(
                "INSERT INTO sessions (token_hash, user_id, created, expires) VALUES (?, ?, ?, ?)",
                (th, user_id, now, expires),
            )
            if host is not None and port is not None:
                self._set_presence(tx, user_id, th, host, port, now)
            queued = tx.one("SELECT COUNT(*) FROM messages WHERE to_user = ?", (user_id,))
            return int(queued[0])

        queued = await self._write(work)
        return {
            "user_id": user_id,
            "username": stored_name,
            "token": token,
            "expires": expires,
            "queued": queued,
        }

    async def sign_out(self, request_id: str | None, token: str) -> dict:
        """End the session and show the user offline at once."""
        await self._wait_ready()
        th = token_hash(token)
        now = self._now()

        def work(tx: Tx) -> dict:
            user_id = self._session(tx, th, now)
            tx.execute("DELETE FROM presence WHERE user_id = ? AND token_hash = ?", (user_id, th))
            tx.execute("DELETE FROM sessions WHERE token_hash = ?", (th,))
            return {}

        return await self._journaled("sign_out", request_id, now, work)

    def _set_presence(self, tx: Tx, user_id: str, th: str, host: str, port: int, now: float) -> None:
        tx.execute(
            tx.dialect.upsert("presence", "user_id", ["user_id", "token_hash", "host", "port", "last_seen"]),
            (user_id, th, host, port, now),
        )

    async def heartbeat(self, token: str, host: str, port: int) -> dict:
        """The user is online at ``host:port`` for ``presence_ttl`` more seconds; the session is renewed.

        Naturally idempotent, so not journaled (a heartbeat every few seconds would fill the journal).
        """
        await self._wait_ready()
        th = token_hash(token)
        now = self._now()
        expires = now + self.session_ttl

        def work(tx: Tx) -> None:
            user_id = self._session(tx, th, now)
            tx.execute("UPDATE sessions SET expires = ? WHERE token_hash = ?", (expires, th))
            self._set_presence(tx, user_id, th, host, port, now)

        await self._write(work)
        return {"online_until": now + self.presence_ttl, "expires": expires}

    async def lookup_user(
        self, token: str, *, username: str | None = None, user_id: str | None = None
    ) -> dict:
        """A user's id, name, public keys and presence, by name or by id."""
        await self._wait_ready()
        th = token_hash(token)
        now = self._now()
        cutoff = now - self.presence_ttl

        def work(tx: Tx) -> dict:
            self._session(tx, th, now)
            columns = "u.id, u.username, u.x25519, u.ed25519, u.created, p.host, p.port, p.last_seen"
            join = "FROM users u LEFT JOIN presence p ON p.user_id = u.id AND p.last_seen > ?"
            if user_id is not None:
                row = tx.one(f"SELECT {columns} {join} WHERE u.id = ?", (cutoff, user_id))
            else:
                row = tx.one(
                    f"SELECT {columns} {join} WHERE u.username_key = ?", (cutoff, (username or "").lower())
                )
            if row is None:
                raise OpError("user_not_found", "no user has that name or id")
            online = row[5] is not None
            return {
                "user_id": row[0],
                "username": row[1],
                "keys": {"x25519": row[2], "ed25519": row[3]},
                "created": row[4],
                "online": online,
                "host": row[5] if online else None,
                "port": int(row[6]) if online else None,
                "last_seen": row[7] if online else None,
            }

        return await self._read(work)

    # -- shared images ---------------------------------------------------------------------------

    async def publish_image(
        self, request_id: str | None, token: str, image_id: str, name: str, size: int, thumbnail: bytes
    ) -> dict:
        """Offer an image (or update the name, size and thumbnail of one already offered)."""
        await self._wait_ready()
        mime = await self._on_cpu(check_thumbnail, thumbnail)
        th = token_hash(token)
        now = self._now()

        def work(tx: Tx) -> dict:
            user_id = self._session(tx, th, now)
            row = tx.one("SELECT owner_id FROM images WHERE id = ?", (image_id,))
            if row is not None and row[0] != user_id:
                raise OpError("image_id_taken", "another user already offers an image with this id")
            if row is None:
                count = tx.one("SELECT COUNT(*) FROM images WHERE owner_id = ?", (user_id,))
                if int(count[0]) >= self.max_images:
                    raise OpError(
                        "too_many_images", f"you offer {self.max_images} images already; unpublish one first"
                    )
                tx.execute(
                    "INSERT INTO images (id, owner_id, name, size, mime, thumbnail, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (image_id, user_id, name, size, mime, thumbnail, now),
                )
            else:
                tx.execute(
                    "UPDATE images SET name = ?, size = ?, mime = ?, thumbnail = ? WHERE id = ?",
                    (name, size, mime, thumbnail, image_id),
                )
            return {"image_id": image_id}

        return await self._journaled("publish_image", request_id, now, work)

    async def unpublish_image(self, request_id: str | None, token: str, image_id: str) -> dict:
        await self._wait_ready()
        th = token_hash(token)
        now = self._now()

        def work(tx: Tx) -> dict:
            user_id = self._session(tx, th, now)
            if tx.execute("DELETE FROM images WHERE id = ? AND owner_id = ?", (image_id, user_id)) == 0:
                if tx.one("SELECT id FROM images WHERE id = ?", (image_id,)) is not None:
                    raise OpError("not_owner", "this image is offered by another user")
                raise OpError("image_not_found", "you offer no image with this id")
            return {"image_id": image_id}

        return await self._journaled("unpublish_image", request_id, now, work)

    async def list_online(self, token: str, cursor: tuple | None = None, limit: int = 50) -> dict:
        """One page of online users with their offered images and thumbnails (base64).

        ``cursor`` is ``None`` for the first page, else the parsed ``next_cursor`` of the previous
        one: ``("u", user_id)`` or ``("i", user_id, image_id)``. A page holds at most ``limit``
        users and ``PAGE_BUDGET`` bytes of JSON; a user with many images may continue on the next
        page (same ``user_id`` again, the remaining images): merge by ``user_id``.
        """
        await self._wait_ready()
        th = token_hash(token)
        now = self._now()
        cutoff = now - self.presence_ttl
        return await self._read(self._list_online_txn, th, now, cutoff, cursor, limit)

    def _list_online_txn(
        self, tx: Tx, th: str, now: float, cutoff: float, cursor: tuple | None, limit: int
    ) -> dict:
        self._session(tx, th, now)
        select = (
            "SELECT p.user_id, u.username, p.host, p.port, p.last_seen FROM presence p"
            " JOIN users u ON u.id = p.user_id WHERE p.last_seen > ? AND p.user_id {op} ?"
            " ORDER BY p.user_id LIMIT ?"
        )
        partial: tuple[str, str] | None = None
        if cursor is None:
            users = tx.all(select.format(op=">="), (cutoff, "", limit + 1))
        elif cursor[0] == "u":
            users = tx.all(select.format(op=">"), (cutoff, cursor[1], limit + 1))
        else:
            partial = (cursor[1], cursor[2])
            users = tx.all(select.format(op=">="), (cutoff, cursor[1], limit + 1))
        more_users = len(users) > limit
        users = users[:limit]
        images: dict[str, list[tuple]] = {}
        capped_at: tuple[str, str] | None = None
        if users:
            marks = ", ".join("?" for _ in users)
            params: list[Any] = [u[0] for u in users]
            extra = ""
            if partial is not None:
                extra = " AND NOT (owner_id = ? AND id <= ?)"
                params += [partial[0], partial[1]]
            rows = tx.all(
                "SELECT owner_id, id, name, size, mime, thumbnail FROM images"
                f" WHERE owner_id IN ({marks}){extra} ORDER BY owner_id, id LIMIT ?",
                (*params, _IMAGE_ROWS_CAP),
            )
            for row in rows:
                images.setdefault(row[0], []).append(row)
            if len(rows) == _IMAGE_ROWS_CAP:
                capped_at = (rows[-1][0], rows[-1][1])
        page: list[dict] = []
        used = json_size(
            {"users": [], "next_cursor": encode_cursor(str(uuid.UUID(int=0)), str(uuid.UUID(int=0)))}
        )
        next_cursor: str | None = None
        full = False
        for user_id, username, host, port, last_seen in users:
            if capped_at is not None and user_id > capped_at[0]:
                next_cursor = encode_cursor(capped_at[0], capped_at[1])
                full = True
                break
            entry = {
                "user_id": user_id,
                "username": username,
                "host": host,
                "port": int(port),
                "last_seen": last_seen,
                "images": [],
            }
            cost = json_size(entry) + 2
            if used + cost > PAGE_BUDGET:
                next_cursor = encode_cursor(page[-1]["user_id"]) if page else None
                full = True
                break
            page.append(entry)
            used += cost
            last_image = partial[1] if partial is not None and partial[0] == user_id else ""
            for _owner, image_id, name, size, mime, thumb in images.get(user_id, []):
                item = {
                    "image_id": image_id,
                    "name": name,
                    "size": int(size),
                    "mime": mime,
                    "thumbnail": base64.b64encode(bytes(thumb)).decode("ascii"),
                }
                cost = json_size(item) + 2
                if used + cost > PAGE_BUDGET:
                    next_cursor = encode_cursor(user_id, last_image)
                    full = True
                    break
                entry["images"].append(item)
                used += cost
                last_image = image_id
            if full:
                break
            if capped_at is not None and user_id == capped_at[0]:
                next_cursor = encode_cursor(user_id, last_image)
                full = True
                break
        if not full and more_users and page:
            next_cursor = encode_cursor(page[-1]["user_id"])
        return {"users": page, "next_cursor": next_cursor}

    # -- queued messages -------------------------------------------------------------------------

    async def queue_message(
        self,
        request_id: str | None,
        token: str,
        kind: str,
        body: str,
        *,
        to_user_id: str | None = None,
        to_username: str | None = None,
    ) -> dict:
        """Queue ``body`` (serialised JSON) for a user; ``{"message_id"}``. Exactly once per request id."""
        await self._wait_ready()
        th = token_hash(token)
        now = self._now()

        def work(tx: Tx) -> dict:
            sender = self._session(tx, th, now)
            # Lock the recipient's row: messages to one user are numbered in commit order, so a
            # reader that acknowledges "up to id N" can never skip one committed later below N.
            lock = tx.dialect.for_update
            if to_user_id is not None:
                row = tx.one(f"SELECT id FROM users WHERE id = ?{lock}", (to_user_id,))
            else:
                row = tx.one(
                    f"SELECT id FROM users WHERE username_key = ?{lock}", ((to_username or "").lower(),)
                )
            if row is None:
                raise OpError("user_not_found", "no user has that name or id")
            recipient = row[0]
            count = tx.one("SELECT COUNT(*) FROM messages WHERE to_user = ?", (recipient,))
            if int(count[0]) >= self.max_queue:
                raise OpError(
                    "queue_full", f"that user has {self.max_queue} messages waiting; try again later"
                )
            tx.execute(
                "INSERT INTO messages (to_user, from_user, kind, body, created) VALUES (?, ?, ?, ?, ?)",
                (recipient, sender, kind, body, now),
            )
            return {"message_id": int(tx.lastrowid), "to": recipient}

        return await self._journaled("queue_message", request_id, now, work)

    async def fetch_queued(self, token: str, after: int = 0, limit: int = 100) -> dict:
        """The caller's waiting messages with id > ``after``, oldest first; they stay until acked."""
        await self._wait_ready()
        th = token_hash(token)
        now = self._now()

        def work(tx: Tx) -> dict:
            user_id = self._session(tx, th, now)
            rows = tx.all(
                "SELECT m.id, m.from_user, u.username, m.kind, m.body, m.created FROM messages m"
                " LEFT JOIN users u ON u.id = m.from_user"
                " WHERE m.to_user = ? AND m.id > ? ORDER BY m.id LIMIT ?",
                (user_id, after, limit + 1),
            )
            messages: list[dict] = []
            used = json_size({"messages": [], "more": False})
            more = len(rows) > limit
            for mid, sender, sender_name, kind, body, created in rows[:limit]:
                item = {
                    "id": int(mid),
                    "from": sender,
                    "from_username": sender_name,
                    "kind": kind,
                    "body": json.loads(body),
                    "created": created,
                }
                cost = json_size(item) + 2
                if used + cost > PAGE_BUDGET:
                    more = True
                    break
                messages.append(item)
                used += cost
            return {"messages": messages, "more": more}

        return await self._read(work)

    async def ack_queued(self, token: str, *, up_to: int | None = None, ids: list[int] | None = None) -> dict:
        """Delete delivered messages (all up to an id, or the listed ids). Idempotent."""
        await self._wait_ready()
        th = token_hash(token)
        now = self._now()

        def work(tx: Tx) -> dict:
            user_id = self._session(tx, th, now)
            removed = 0
            if up_to is not None:
                removed += tx.execute("DELETE FROM messages WHERE to_user = ? AND id <= ?", (user_id, up_to))
            if ids:
                marks = ", ".join("?" for _ in ids)
                removed += tx.execute(
                    f"DELETE FROM messages WHERE to_user = ? AND id IN ({marks})", (user_id, *ids)
                )
            return {"removed": removed}

        return await self._write(work)

    # -- housekeeping ----------------------------------------------------------------------------

    async def purge_expired(self) -> dict:
        """Delete expired sessions, stale presence and old journal records; the counts removed."""
        await self._wait_ready()
        now = self._now()

        def work(tx: Tx) -> dict:
            return {
                "sessions": tx.execute("DELETE FROM sessions WHERE expires <= ?", (now,)),
                "presence": tx.execute(
                    "DELETE FROM presence WHERE last_seen <= ?", (now - self.presence_ttl,)
                ),
                "journal": tx.execute("DELETE FROM journal WHERE created <= ?", (now - self.journal_ttl,)),
            }

        return await self._write(work)

    def _purge_quietly(self) -> Any:
        d = defer.Deferred.fromCoroutine(self.purge_expired())
        d.addErrback(lambda f: self.log.failure("directory purge failed; will try again", f))
        return d
