"""The web app's HTTP side: one resource that checks every request, then routes it.

Routes (everything else is 404)::

    GET  /  /app.js  /app.css  /icon.svg    the static app (from the package, kept in memory)
    GET  /auth?ticket=T                     trade a one-time ticket for the session cookie, then /
    GET  /api/session                       {csrf, view_seconds, commands}: the page's CSRF token
    GET  /api/events                        server-sent events (state changes, command progress)
    POST /api/run/COMMAND   JSON args       a command of the daemon's table -> {ok, result | error}
    POST /api/upload?name=N raw image       encrypt an uploaded image (spooled in DIR/uploads, removed)
    GET  /api/file/ID                       a file a command reported (original, encrypted, thumbnail)
    GET  /api/shown/ID                      a decoded image, from memory, during its countdown

Every response carries the security headers; every request first passes
``Guard.check`` (security.py). Errors are JSON ``{ok: false, error: {message, ...}}``
with the very message the `cloudp2p` command prints; a bug gives "internal error in
the daemon; see its log" and its traceback goes to the log only.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import secrets
from collections import Counter, OrderedDict
from collections.abc import Callable
from importlib import resources
from typing import Any, Protocol
from urllib.parse import unquote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from cloudp2p.errors import CloudP2PError, CloudUnreachable, UsageError, error_json
from cloudp2p.web.commands import CommandRunner, UnknownCommand
from cloudp2p.web.events import EventHub
from cloudp2p.web.security import BAD_ORIGIN, SECURITY_HEADERS, Guard, Refusal, Session
from cloudp2p.web.shown import ShownImages

MAX_JSON_BODY = 64 * 1024
MAX_SERVED_FILE = 64 * 1024 * 1024
MAX_FILE_LINKS = 4096
FILE_KEYS = frozenset({"original", "encrypted", "thumbnail"})  # result keys that name a file to show

STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
    "/icon.svg": ("icon.svg", "image/svg+xml"),
}
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"BM", "image/bmp"),
)


class DaemonHost(Protocol):
    """What the web app uses of the client daemon besides its commands."""

    reactor: Any
    home: Any

    async def read_file(self, path: str | os.PathLike[str], limit: int | None = None) -> bytes: ...

    async def write_file(self, path: str | os.PathLike[str], data: bytes) -> None: ...


def load_static() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("cloudp2p.web") / "static"
    return {route: ((folder / name).read_bytes(), mime) for route, (name, mime) in STATIC.items()}


def sniff(data: bytes) -> str:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


class FileLinks:
    """Opaque ids for the files commands report, so that pages never name a path themselves."""

    def __init__(self) -> None:
        self._by_id: OrderedDict[str, str] = OrderedDict()
        self._by_path: dict[str, str] = {}

    def link(self, path: str) -> str:
        key = self._by_path.get(path)
        if key is None:
            key = secrets.token_urlsafe(12)
            self._by_id[key] = path
            self._by_path[path] = key
            while len(self._by_id) > MAX_FILE_LINKS:
                _, old = self._by_id.popitem(last=False)
                self._by_path.pop(old, None)
        return f"/api/file/{key}"

    def path(self, key: str) -> str | None:
        return self._by_id.get(key)


class BoundedRequest(server.Request):
    """A request whose body is kept in memory and may not exceed the site's ``max_body``."""

    too_large = False

    def gotLength(self, length: int | None) -> None:
        self.content = io.BytesIO()
        self._received = 0
        limit = self.channel.site.max_body
        if length is not None and length > limit:
            self.too_large = True

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        if self.too_large or self._received > self.channel.site.max_body:
            self.too_large = True
            self.channel.transport.abortConnection()  # do not read (or buffer) gigabytes for nothing
            return
        self.content.write(data)


class WebSite(server.Site):
    requestFactory = BoundedRequest
    displayTracebacks = False
    noisy = False

    def __init__(self, app: WebApp, max_body: int) -> None:
        super().__init__(app, timeout=60)
        self.max_body = max_body

    def log(self, request: Any) -> None:  # no access log: it would record ticket links
        pass


class WebApp(resource.Resource):
    isLeaf = True
    log = Logger()

    def __init__(
        self,
        *,
        host: DaemonHost,
        runner: CommandRunner,
        guard: Guard,
        hub: EventHub,
        shown: ShownImages,
        view_seconds: float,
        max_upload: int,
    ) -> None:
        super().__init__()
        self.host = host
        self.runner = runner
        self.guard = guard
        self.hub = hub
        self.shown = shown
        self.view_seconds = view_seconds
        self.max_upload = max_upload
        self.files = FileLinks()
        self.static = load_static()
        self.counters: Counter[str] = Counter()  # refusals by reason, requests, bugs

    # -- entry -------------------------------------------------------------------------------------

    def render(self, request: Any) -> Any:
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        request.setHeader("Server", "cloudp2p")
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("utf-8", "replace")
        is_api = path.startswith("/api/")
        session, refusal = self.guard.check(
            method=method,
            host=_header(request, "host"),
            origin=_header(request, "origin"),
            cookie=_cookie(request, self.guard.cookie_name),
            csrf=_header(request, "x-csrf-token"),
            needs_session=is_api,
        )
        fetch_site = _header(request, "sec-fetch-site")
        if refusal is None and is_api and fetch_site not in (None, "same-origin", "none"):
            refusal = Refusal(403, BAD_ORIGIN)  # a browser telling us another site asked
        if refusal is not None:
            self.counters[f"refused_{refusal.status}"] += 1
            self.log.info(
                "refused {method} {path}: {status} {why}",
                method=method,
                path=path[:80],
                status=refusal.status,
                why=refusal.message,
            )
            return self._json(request, refusal.status, {"ok": False, "error": {"message": refusal.message}})
        if getattr(request, "too_large", False):
            too_large = UsageError(f"(the body is larger than {self.max_upload} bytes)")
            return self._json(request, 413, _error(too_large))
        self.counters["requests"] += 1
        if not is_api:
            return self._page(request, method, path)
        request.setHeader("Cache-Control", "no-store")
        assert session is not None
        return self._api(request, method, path, session)

    def _page(self, request: Any, method: str, path: str) -> Any:
        if path == "/auth" and method == "GET":
            return self._auth(request)
        found = self.static.get(path)
        if found is None or method not in ("GET", "HEAD"):
            return self._json(request, 404, {"ok": False, "error": {"message": "No such page."}})
        body, mime = found
        request.setHeader("Content-Type", mime)
        request.setHeader("Cache-Control", "no-cache")
        return body

    def _auth(self, request: Any) -> bytes:
        ticket = (request.args.get(b"ticket") or [b""])[0].decode("ascii", "replace")
        session = self.guard.redeem(ticket) if ticket else None
        request.setHeader("Cache-Control", "no-store")
        if session is None:
            self.counters["refused_ticket"] += 1
            request.setResponseCode(403)
            request.setHeader("Content-Type", "text/plain; charset=utf-8")
            return b"This link was used already or has expired; run `cloudp2p web` for a new one.\n"
        request.setHeader("Set-Cookie", self.guard.cookie(session))
        request.redirect(b"/")
        return b""

    # -- the API -----------------------------------------------------------------------------------

    def _api(self, request: Any, method: str, path: str, session: Session) -> Any:
        parts = path.split("/")[2:]  # "/api/run/x" -> ["run", "x"]
        route = (method if method != "HEAD" else "GET", parts[0] if parts else "")
        if route == ("GET", "session") and len(parts) == 1:
            return self._json(
                request,
                200,
                {
                    "csrf": session.csrf,
                    "view_seconds": self.view_seconds,
                    "max_upload": self.max_upload,
                },
            )
        if route == ("GET", "events") and len(parts) == 1:
            return self._events(request)
        if route == ("POST", "run") and len(parts) == 2:
            return self._start(request, self._run(request, unquote(parts[1])))
        if route == ("POST", "upload") and len(parts) == 1:
            return self._start(request, self._upload(request))
        if route == ("GET", "file") and len(parts) == 2:
            return self._start(request, self._file(request, parts[1]))
        if route == ("GET", "shown") and len(parts) == 2:
            return self._shown(request, parts[1])
        return self._json(request, 404, {"ok": False, "error": {"message": "No such API route."}})

    def _events(self, request: Any) -> Any:
        if self.hub.full():
            return self._json(request, 503, {"ok": False, "error": {"message": "Too many open pages."}})
        request.setHeader("Content-Type", "text/event-stream; charset=utf-8")
        self.hub.add(request)
        return server.NOT_DONE_YET

    def _start(self, request: Any, coro: Any) -> Any:
        """Run an API coroutine; it writes the response itself. Bugs become a 500 with no detail."""
        d = defer.Deferred.fromCoroutine(coro)

        def bug(failure: Any) -> None:
            self.counters["bugs"] += 1
            self.log.failure("web request {path} failed with a bug", failure, path=request.path)
            err = error_json(CloudP2PError("internal error in the daemon; see its log"))
            self._finish(request, 500, {"ok": False, "error": err})

        d.addErrback(bug)
        return server.NOT_DONE_YET

    async def _run(self, request: Any, name: str) -> None:
        if not self.runner.offered(name):
            self._finish(request, 404, {"ok": False, "error": {"message": f"No command {name!r} here."}})
            return
        try:
            args = _json_body(request)
        except UsageError as e:
            self._finish(request, 400, _error(e))
            return
        try:
            result = await self.runner.run(name, args, self._progress)
        except UnknownCommand:
            self._finish(request, 404, {"ok": False, "error": {"message": f"No command {name!r} here."}})
            return
        except CloudP2PError as e:
            self._finish(request, _status(e), _error(e))
            return
        self._finish(request, 200, {"ok": True, "result": self._for_page(result)})

    async def _upload(self, request: Any) -> None:
        raw_name = (request.args.get(b"name") or [b""])[0]
        name = raw_name.decode("utf-8", "replace").strip() or "image"
        request.content.seek(0)
        data = request.content.read()
        if not data:
            self._finish(request, 400, _error(UsageError("(the upload is empty; choose an image file)")))
            return
        spool = self.host.home.path / "uploads"
        spool.mkdir(mode=0o700, exist_ok=True)
        path = spool / f"{secrets.token_hex(8)}.upload"
        try:
            await self.host.write_file(path, data)
            result = await self.runner.encrypt_upload(str(path), name, self._progress)
        except CloudP2PError as e:
            self._finish(request, _status(e), _error(e))
            return
        finally:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
        self._finish(request, 200, {"ok": True, "result": self._for_page(result)})

    async def _file(self, request: Any, key: str) -> None:
        path = self.files.path(key)
        if path is None:
            self._finish(request, 404, {"ok": False, "error": {"message": "No such file here."}})
            return
        try:
            data = await self.host.read_file(path, MAX_SERVED_FILE)
        except CloudP2PError as e:
            self._finish(request, 404, _error(e))
            return
        self._finish_bytes(request, data, sniff(data))

    def _shown(self, request: Any, key: str) -> Any:
        shown = self.shown.get(key)
        if shown is None:
            return self._json(request, 404, {"ok": False, "error": {"message": "This view has ended."}})
        request.setHeader("Content-Type", shown.mime)
        return shown.data

    # -- results for the page ----------------------------------------------------------------------

    def _progress(self, label: str, done: int, total: int) -> None:
        self.hub.publish("progress", {"label": label, "done": done, "total": total})

    def _for_page(self, value: Any) -> Any:
        """Paths of files to show become /api/file links; a decoded view goes to memory."""
        if isinstance(value, list):
            return [self._for_page(v) for v in value]
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for key, v in value.items():
            if key in FILE_KEYS and isinstance(v, str) and os.path.isabs(v):
                out[key] = self.files.link(v)
            elif key == "data" and isinstance(v, str) and "mime" in value:
                try:
                    data = base64.b64decode(v, validate=True)
                except binascii.Error:
                    continue
                out["url"] = f"/api/shown/{self.shown.keep(data, sniff(data))}"
                out["seconds"] = self.view_seconds
            elif key in ("path", "thumbnails_dir", "home"):
                continue  # local paths mean nothing in a page
            else:
                out[key] = self._for_page(v)
        return out

    # -- writing responses -------------------------------------------------------------------------

    def _json(self, request: Any, status: int, body: dict[str, Any]) -> bytes:
        request.setResponseCode(status)
        request.setHeader("Content-Type", "application/json; charset=utf-8")
        request.setHeader("Cache-Control", "no-store")
        return json.dumps(body, sort_keys=True).encode()

    def _finish(self, request: Any, status: int, body: dict[str, Any]) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        request.write(self._json(request, status, body))
        request.finish()

    def _finish_bytes(self, request: Any, data: bytes, mime: str) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        request.setHeader("Content-Type", mime)
        request.write(data)
        request.finish()


def _header(request: Any, name: str) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _cookie(request: Any, name: str) -> str | None:
    value = request.getCookie(name.encode())
    return value.decode("latin-1") if value else None


def _json_body(request: Any) -> dict[str, Any]:
    ctype = (_header(request, "content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise UsageError("(send the arguments as application/json)")
    request.content.seek(0)
    raw = request.content.read(MAX_JSON_BODY + 1)
    if len(raw) > MAX_JSON_BODY:
        raise UsageError(f"(the arguments are larger than {MAX_JSON_BODY} bytes)")
    try:
        args = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise UsageError("(the arguments are not valid JSON)") from None
    if not isinstance(args, dict):
        raise UsageError("(the arguments must be a JSON object)")
    return args


def _error(e: CloudP2PError) -> dict[str, Any]:
    return {"ok": False, "error": error_json(e)}


def _status(e: CloudP2PError) -> int:
    if isinstance(e, UsageError):
        return 400
    if isinstance(e, CloudUnreachable):
        return 503
    return 409


Clock = Callable[[], float]
