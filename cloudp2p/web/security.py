"""Who may use the web app: tickets, session cookies, the Host allow-list, Origin and CSRF checks.

The app listens on loopback, where every local process, and every web page the
user's browser opens, can send it requests. So, as Jupyter and Syncthing do:

- ``cloudp2p web`` (over the uid-checked control socket) mints a **ticket**: a random
  one-time token in a link, good for ``TICKET_SECONDS``. Opening the link trades it for
  a **session**: a random token (new at every daemon start, kept in memory only) sent
  back as an ``HttpOnly; SameSite=Strict`` cookie whose name carries the port (two
  daemons on one machine do not overwrite each other's cookie). Scripts in pages never
  see it, and other sites' requests never carry it.
- The **Host** header must name this daemon by a loopback name or address (or the
  explicitly configured host): a DNS-rebinding page at ``evil.example`` that resolves
  to 127.0.0.1 sends ``Host: evil.example`` and gets 421.
- Every request that changes something (any method but GET/HEAD) must carry an
  **Origin** equal to this app's own and the session's **CSRF token** in the
  ``X-CSRF-Token`` header (the page reads it from ``/api/session``, which another
  origin cannot read).
- Every response carries ``Content-Security-Policy: default-src 'self'; frame-ancestors
  'none'`` (no inline script, no foreign asset, no framing), ``X-Content-Type-Options:
  nosniff`` and ``Referrer-Policy: same-origin``.

``Guard.check`` is the one decision; the resource tree calls it first for every request.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping

import attrs

TICKET_SECONDS = 120.0
MAX_TICKETS = 16  # outstanding links; the oldest is dropped first
MAX_SESSIONS = 16  # browsers signed in at once; the oldest is dropped first
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD"})
ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST"})

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@attrs.frozen
class Refusal:
    """Why a request is refused: the HTTP status and a sentence for the user."""

    status: int
    message: str


BAD_HOST = "This daemon answers only to its own loopback address; check the link `cloudp2p web` printed."
NO_SESSION = "You are not signed in to this page; run `cloudp2p web` and open the link it prints."
BAD_ORIGIN = "Refused: the request came from another site."
NO_CSRF = "Refused: the request lacks this page's CSRF token; reload the page."
BAD_METHOD = "Method not allowed."


@attrs.frozen
class Session:
    token: str
    csrf: str


class Guard:
    """Tickets, sessions and the per-request checks for one web app on one port."""

    def __init__(
        self,
        port: int,
        *,
        extra_host: str | None = None,
        clock: Callable[[], float],
        token: Callable[[], str] = lambda: secrets.token_urlsafe(32),
    ) -> None:
        self.port = port
        self.clock = clock
        self._token = token
        names = list(LOOPBACK_NAMES)
        if extra_host is not None:
            names.append(_bracketed(extra_host))
        self.hosts = frozenset(f"{n}:{port}" for n in names)
        self.origins = frozenset(f"http://{h}" for h in self.hosts)
        self._tickets: OrderedDict[str, float] = OrderedDict()
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    @property
    def cookie_name(self) -> str:
        return f"cloudp2p_session_{self.port}"

    # -- tickets and sessions ----------------------------------------------------------------------

    def new_ticket(self) -> str:
        ticket = self._token()
        self._tickets[ticket] = self.clock() + TICKET_SECONDS
        while len(self._tickets) > MAX_TICKETS:
            self._tickets.popitem(last=False)
        return ticket

    def redeem(self, ticket: str) -> Session | None:
        """A new session for a valid, unused, unexpired ticket (used up either way)."""
        found = None
        for known in list(self._tickets):
            if hmac.compare_digest(known.encode(), ticket.encode()):
                found = known
        if found is None:
            return None
        expires = self._tickets.pop(found)
        if expires < self.clock():
            return None
        session = Session(self._token(), self._token())
        self._sessions[session.token] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def session(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        found = None
        for token, session in self._sessions.items():
            if hmac.compare_digest(token.encode(), cookie.encode()):
                found = session
        return found

    def end(self, session: Session) -> None:
        self._sessions.pop(session.token, None)

    def cookie(self, session: Session) -> str:
        return f"{self.cookie_name}={session.token}; Path=/; HttpOnly; SameSite=Strict"

    # -- the checks --------------------------------------------------------------------------------

    def host_ok(self, host: str | None) -> bool:
        return host is not None and host.lower() in self.hosts

    def check(
        self,
        *,
        method: str,
        host: str | None,
        origin: str | None,
        cookie: str | None,
        csrf: str | None,
        needs_session: bool,
    ) -> tuple[Session | None, Refusal | None]:
        """The session of an allowed request, or why it is refused (checked in this order)."""
        if not self.host_ok(host):
            return None, Refusal(421, BAD_HOST)
        if method not in ALLOWED_METHODS:
            return None, Refusal(405, BAD_METHOD)
        changes = method not in SAFE_METHODS
        if changes and origin not in self.origins:
            return None, Refusal(403, BAD_ORIGIN)
        if not needs_session:
            return None, None
        session = self.session(cookie)
        if session is None:
            return None, Refusal(403, NO_SESSION)
        if changes and not (csrf and hmac.compare_digest(csrf.encode(), session.csrf.encode())):
            return None, Refusal(403, NO_CSRF)
        return session, None


def _bracketed(host: str) -> str:
    return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
