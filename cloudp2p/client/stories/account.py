"""Accounts and the daemon itself: register, login, logout, trust a user's new keys, status, counters,
shutdown."""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from typing import Any

import attrs
from twisted.logger import Logger

from cloudp2p.client import errors as cerr
from cloudp2p.client.stories.parts import JSONDict, Parts, Progress, Story
from cloudp2p.errors import CloudUnreachable, RequestFailed


def describe_servers(st: JSONDict, configured: Any) -> list[str]:
    """One line per server from a ``status`` reply: role, load, or that it does not answer."""
    members = {str(m) for m in st.get("members") or []}
    loads = st.get("loads") or {}
    known = st.get("cluster", {}).get("members") if isinstance(st.get("cluster"), dict) else None
    ids = sorted({str(m.get("id")) for m in known or [] if isinstance(m, dict)} | members, key=str)
    lines = []
    for sid in ids:
        if sid in members:
            role = "coordinator" if sid == str(st.get("coordinator")) else "member"
            load = loads.get(sid)
            lines.append(
                f"server {sid}: {role}" + (f", load {load:.2f}" if isinstance(load, (int, float)) else "")
            )
        else:
            lines.append(f"server {sid}: not answering (failed)")
    return lines or [f"{h}:{p}" for h, p in configured]




class Account(Story):
    log = Logger()

    def __init__(
        self,
        parts: Parts,
        *,
        signed_in: Callable[[], None],
        stop: Callable[[], None],
        control_counters: collections.Counter[str] | None = None,
    ) -> None:
        super().__init__(parts)
        self.on_signed_in = signed_in  # the viewer's fetches resume once the session is back
        self.stop = stop  # stops the daemon's process (the tap's reactor.stop)
        self.control_counters = control_counters  # the control socket's counters

    async def register(self, args: JSONDict, progress: Progress) -> JSONDict:
        username = args["username"]
        password = args["password"]
        if self.session.username:
            raise cerr.AlreadyRegistered(f"(it belongs to {self.session.username})")
        assert self.session.identity is not None
        reply = await self.cloud.call("register", username, password, self.session.identity.public.to_json())
        self.session.save_session(username=reply["username"], user_id=reply["user_id"])
        return {"username": reply["username"], "user_id": reply["user_id"]}

    async def login(self, args: JSONDict, progress: Progress) -> JSONDict:
        username = args["username"] or self.session.username
        password = args["password"]
        self.session.require_registered()
        if username.lower() != (self.session.username or "").lower():
            raise cerr.NotRegistered(f"(this home holds the keys of {self.session.username}, not {username})")
        addr = self.session.peer_address
        assert addr is not None and password is not None
        reply = await self.cloud.call("sign_in", username, password, addr[0], addr[1])
        if reply.get("user_id") != self.session.user_id:
            raise cerr.HomeError(f"(the directory's {username} is another account than this home's)")
        self.session.signed_in(reply)
        applied: list[str] = []
        try:
            applied = await self.cloud.drain_queue()
        except (CloudUnreachable, RequestFailed) as e:
            self.log.info("queued messages will be fetched later: {why}", why=str(e))
        self.on_signed_in()
        return {
            "username": reply["username"],
            "user_id": reply["user_id"],
            "expires": reply.get("expires"),
            "applied": applied,
        }

    async def logout(self, args: JSONDict, progress: Progress) -> JSONDict:
        token = self.session.require_token()
        try:
            await self.cloud.call("sign_out", token)
        except cerr.NotSignedIn:
            pass
        finally:
            self.session.signed_out("logout")
        return {"username": self.session.username}

    # -- pinned keys ---------------------------------------------------------------------------------

    async def trust(self, args: JSONDict, progress: Progress) -> JSONDict:
        """Accept the keys the directory has for USER now (they made new keys, and said so)."""
        return await self.peers.trust(args["user"])

    # -- status and shutdown -------------------------------------------------------------------------

    async def status(self, args: JSONDict, progress: Progress) -> JSONDict:
        addr = self.session.peer_address
        me = {
            "username": self.session.username,
            "user_id": self.session.user_id,
            "signed_in": bool(self.session.token),
            "peer": f"{addr[0]}:{addr[1]}" if addr else None,
            "home": str(self.session.home.path),
            "pid": os.getpid(),
        }
        cloud: JSONDict = {
            "reachable": False,
            "servers": [f"{h}:{p}" for h, p in self.session.config.servers],
        }
        try:
            st = await self.cloud.call("status")
            cloud.update(reachable=True, coordinator=st.get("coordinator"), detail=st)
            cloud["servers"] = describe_servers(st, self.session.config.servers)
        except CloudUnreachable:
            pass
        except RequestFailed as e:
            cloud.update(reachable=True, error=str(e))
        return {"me": me, "cloud": cloud, "counters": self.listener_counters()}

    async def counters(self, args: JSONDict, progress: Progress) -> JSONDict:
        """The listeners' counters only (no call to the cloud): cheap enough to poll."""
        return self.listener_counters()

    def listener_counters(self) -> JSONDict:
        """What the daemon's listeners refused or dropped (for operators and the fuzzer)."""
        messenger = self.peers.messenger
        out: JSONDict = {
            "peer_received": messenger.protocol.received if messenger else 0,
            "peer_rejected": messenger.protocol.rejected if messenger else 0,
            "peer_dropped": messenger.dropped if messenger else 0,
            "peer_guard": dict(self.peers.guard),
            "lookup_cache": len(self.peers.lookups),
            "state_writes": self.work.state_writer.writes if self.work.state_writer else 0,
            "control": dict(self.control_counters) if self.control_counters is not None else {},
        }
        stats = getattr(self.work.transfers, "stats", None)
        if stats is not None:
            out["transfer"] = attrs.asdict(stats)
        return out

    async def shutdown(self, args: JSONDict, progress: Progress) -> JSONDict:
        token = self.session.token
        told = False
        if token:
            try:
                await self.cloud.call("sign_out", token)
                told = True
            except (CloudUnreachable, RequestFailed, cerr.NotSignedIn) as e:
                self.log.info("could not tell the cloud before stopping: {why}", why=str(e))
            self.session.signed_out("shutdown")
        self.work.reactor.callLater(0.2, self.stop)
        return {"stopping": True, "signed_out": told}
