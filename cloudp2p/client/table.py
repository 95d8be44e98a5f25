"""The command table: every `cloudp2p` command defined once, for every front end.

A ``Command`` holds all there is to know about one command: its name and help, its
arguments (each with the daemon's check and the command line's early parse), the
handler that runs it in the daemon (``"story.method"``, see ``cloudp2p.client.app``),
how its result reads as text, which exit codes it may end with, and where it may be
used. The `cloudp2p` command builds its parser, its request and its output from it
(``cloudp2p.client.cli``); the daemon binds the handlers and serves the same table
on its control socket (``bind``); the web app offers the commands marked ``web``
(``cloudp2p.web.commands``). Adding a command is one record here plus its handler.

No Twisted here: the `cloudp2p` command imports this module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from cloudp2p import errors
from cloudp2p.client import checks
from cloudp2p.client import errors as cerr
from cloudp2p.client.checks import Check

JSONDict = dict[str, Any]
Progress = Callable[[str, int, int], None]
Handler = Callable[[JSONDict, Progress], Awaitable[JSONDict]]

DAEMON, LOCAL = "daemon", "local"  # where a command runs: in the daemon, or in the `cloudp2p` process


@attrs.frozen
class Arg:
    """One argument: its key in the request's ``args``, its check, and how the command line reads it."""

    name: str
    check: Check
    help: str = ""
    option: str | None = None  # "--views"; None: a positional argument
    parse: Callable[[str], Any] | None = None  # argparse ``type``; None: the text as typed
    nargs: str | None = None
    required: bool = False  # an option the command line must give
    metavar: str | None = None
    cli: bool = True  # False: not on the command line (the control socket and the web app only)
    sent: bool = True  # False: the command line's own (``--open``), never sent to the daemon

    @property
    def is_flag(self) -> bool:
        return self.check is checks.flag


@attrs.frozen
class Web:
    """How the web app may run a command: ``fixed`` args it always adds; ``upload``: only with a file
    the web app spooled itself (never a path a page names)."""

    fixed: Mapping[str, Any] = attrs.field(factory=dict)
    upload: bool = False


@attrs.frozen
class Command:
    name: str
    help: str
    handler: str  # "story.method" of the daemon (or of the `cloudp2p` process, for LOCAL commands)
    text: Callable[[JSONDict], str]
    args: tuple[Arg, ...] = ()
    errors: tuple[type[errors.CloudP2PError], ...] = ()  # what it may end with, besides the common ones
    runs: str = DAEMON
    cli: bool = True  # offered on the command line
    web: Web | None = None  # offered by the web app
    password: str | None = None  # "new" (asked twice) or "existing": the command line asks for it
    opens: str | None = None  # "path" or "url" of the result: the command line's ``--open``

    def check(self, args: Mapping[str, Any]) -> JSONDict:
        """The checked ``args`` of a control request (unknown keys are ignored), or ``InvalidArgument``."""
        return {a.name: a.check(args.get(a.name), a.name) for a in self.args if a.sent}

    def exit_codes(self) -> list[tuple[int, str]]:
        """(code, what) this command may exit with, the common ones included, by code."""
        found = {e.exit_code: e for e in COMMON_ERRORS + self.errors}
        return [(code, _what(found[code])) for code in sorted(found)]


def _what(error: type[errors.CloudP2PError]) -> str:
    return error.__name__


# Any daemon command may end with these.
COMMON_ERRORS: tuple[type[errors.CloudP2PError], ...] = (
    errors.UsageError,
    errors.DaemonNotRunning,
    cerr.ControlProtocolError,
)
_CLOUD = (errors.CloudUnreachable, errors.RequestFailed, errors.RateLimited, cerr.NotSignedIn)


# -- how results read --------------------------------------------------------------------------------


def _views(n: Any) -> str:
    return f"{n} view{'s' if n != 1 else ''}"


def _login(r: JSONDict) -> str:
    lines = [f"Signed in as {r['username']} (id {r['user_id']})."]
    lines += [f"  applied while you were away: {a}" for a in r.get("applied", [])]
    return "\n".join(lines)


def _published(r: JSONDict) -> str:
    state = "now offered to others" if r["published"] else "no longer offered"
    text = f"Image {r['name']} ({r['image_id']}) is {state}."
    if r["published"]:
        shows = "a preview of the original" if r.get("preview") else "the cover, not the image"
        text += f"\n  its thumbnail shows {shows}"
    return text


def _trusted(r: JSONDict) -> str:
    if r.get("previous") is None:
        return f"Now trusting {r['user']}'s keys (ed25519 {r['ed25519']})."
    if r.get("changed"):
        return f"Now trusting {r['user']}'s NEW keys (ed25519 {r['ed25519']}; was {r['previous']})."
    return f"{r['user']}'s keys are unchanged (ed25519 {r['ed25519']})."


def _users(r: JSONDict) -> str:
    if not r["users"]:
        return "Nobody else is online."
    lines = []
    for u in r["users"]:
        lines.append(f"{u['username']}{' (you)' if u.get('me') else ''}")
        if not u["images"]:
            lines.append("    (offers no image)")
        for im in u["images"]:
            lines.append(
                f"    {im['name']}  id {im['image_id']}  {im['size']} bytes  thumbnail: {im['thumbnail']}"
            )
    return "\n".join(lines)


_WAITED = {
    "received": "\n{owner} accepted: {name} received, {left} left.",
    "rejected": "\n{owner} rejected the request.",
    "failed": "\nThe owner accepted but the transfer failed; it resumes on its own.",
    "sent": "\nNo answer yet; `cloudp2p images` shows when it arrives.",
    "queued": "\nNo answer yet; `cloudp2p images` shows when it arrives.",
    "fetching": "\nStill receiving; `cloudp2p images` shows when it arrives.",
}


def _asked(more: bool) -> Callable[[JSONDict], str]:
    def text(r: JSONDict) -> str:
        how = "sent to" if r["delivery"] == "peer" else "queued in the directory (offline) for"
        name = r.get("image_name") or r["image_id"]
        plural = "s" if r["views"] != 1 else ""
        out = (
            f"Request {r['request_id']} for {r['views']} {'more ' if more else ''}view{plural} "
            f"of {name} {how} {r['owner']}."
        )
        waited = _WAITED.get(r.get("state", ""), "")
        return out + waited.format(owner=r["owner"], name=name, left=_views(r.get("views_left")))

    return text


def _inbox(r: JSONDict) -> str:
    if not r["requests"]:
        return "No request."
    return "\n".join(
        f"{q['request_id']}  {q['from']} asks {_views(q['views'])} of {q['image_name']} "
        f"({q['kind']}{', has used ' + str(q['used']) if q.get('used') else ''})  [{q['state']}]"
        for q in r["requests"]
    )


def _accepted(r: JSONDict) -> str:
    if r.get("kind") == "more":
        return f"{r['viewer']} may now view {r['image_name']} {_views(r['views'])} in total."
    if r.get("delivered") is False:
        return f"Offered {r['image_name']} to {r['viewer']}; they have not finished fetching it yet."
    return f"Sent {r['image_name']} to {r['viewer']} with {_views(r['views'])}."


def _images(r: JSONDict) -> str:
    lines = ["Your images:"] if r["owned"] else ["You own no image yet."]
    for im in r["owned"]:
        pub = "published" if im["published"] else "private"
        lines.append(f"    {im['name']}  id {im['image_id']}  {pub}  {im['encrypted']}")
        for viewer, n in sorted(im.get("grants", {}).items()):
            lines.append(f"        {viewer}: {_views(n)} granted")
    lines.append("Received images:" if r["received"] else "No received image.")
    for im in r["received"]:
        lines.append(
            f"    {im['name']}  id {im['image_id']}  from {im['owner']}  {_views(im['views_left'])} left"
        )
    waiting = [q for q in r.get("requests", []) if q["state"] != "received"]
    if waiting:
        lines.append("Your requests:")
    for q in waiting:
        extra = f" {q['done']}/{q['total']} bytes" if q["state"] == "fetching" else ""
        extra += f" ({q['error']})" if q.get("error") else ""
        lines.append(f"    {q['request_id']}  {q['image_name']} from {q['owner']}: {q['state']}{extra}")
    return "\n".join(lines)


def _viewed(r: JSONDict) -> str:
    if r["shown"] == "cover":
        return f"No views left for {r['name']}: the cover is shown instead.\n  {r['path']}"
    return f"Decoded {r['name']} ({_views(r['views_left'])} left).\n  {r['path']}"


def _rights_sent(r: JSONDict) -> str:
    how = "applied at once" if r["delivery"] == "peer" else "queued until they sign in"
    name = r.get("image_name") or r["image_id"]
    return f"{r['viewer']} may now view {name} {_views(r['views'])} in total ({how})."


def _status(r: JSONDict) -> str:
    me, cloud = r["me"], r["cloud"]
    coordinator = cloud.get("coordinator")
    lines = [
        f"user:        {me.get('username') or '(not registered)'}"
        + (f" (id {me['user_id']})" if me.get("user_id") else ""),
        f"session:     {'signed in' if me.get('signed_in') else 'signed out'}",
        f"peer:        {me.get('peer')}",
        f"cloud:       {'reachable' if cloud.get('reachable') else 'unreachable'}",
        f"coordinator: {coordinator if coordinator is not None else 'unknown'}",
    ]
    return "\n".join(lines + [f"  {s}" for s in cloud.get("servers", [])])


def _web_link(r: JSONDict) -> str:
    lines = [f"Open {r['url']}", f"  (the link works once, within {r['expires_in']:.0f} s)"]
    return "\n".join(lines + [f"warning: {w}" for w in r.get("warnings", [])])


def _json(r: JSONDict) -> str:
    import json

    return json.dumps(r, indent=2, sort_keys=True)


# -- the commands ------------------------------------------------------------------------------------

_image = Arg("image", checks.text(255), "image id or name")
_user = Arg("user", checks.user)
_wait = Arg(
    "wait", checks.wait, "wait for the answer", option="--wait", parse=checks.parse_seconds, metavar="SECONDS"
)
_open = Arg("open", checks.flag, option="--open", sent=False)

COMMANDS: tuple[Command, ...] = (
    Command(
        "init",
        "write DIR/client.toml for a cloud (no daemon needed)",
        "local.init",
        lambda r: f"Wrote {r['config']}; start the daemon with: twistd -n cloudp2p-client --home {r['home']}",
        args=(
            Arg(
                "server",
                checks.text(),
                "a cloud server (repeat)",
                option="--server",
                nargs="append",
                required=True,
                metavar="HOST:PORT",
            ),
            Arg("peer_host", checks.text(), "address for the peer listener", option="--peer-host"),
            Arg("force", checks.flag, "overwrite an existing client.toml", option="--force"),
        ),
        errors=(errors.ConfigError,),
        runs=LOCAL,
    ),
    Command(
        "register",
        "create an account (gets the globally unique id)",
        "account.register",
        lambda r: f"Registered {r['username']} with id {r['user_id']}.",
        args=(Arg("username", checks.user), Arg("password", checks.text(1024), cli=False)),
        errors=(*_CLOUD, cerr.AlreadyRegistered),
        web=Web(),
        password="new",
    ),
    Command(
        "login",
        "sign in",
        "account.login",
        _login,
        args=(
            Arg("username", checks.text(64, optional=True), nargs="?"),
            Arg("password", checks.text(1024), cli=False),
        ),
        errors=(*_CLOUD, cerr.NotRegistered, cerr.HomeError),
        web=Web(),
        password="existing",
    ),
    Command(
        "logout",
        "sign out (presence ends)",
        "account.logout",
        lambda r: f"Signed out {r.get('username') or ''}.".replace(" .", "."),
        errors=(cerr.NotSignedIn, cerr.NotRegistered),
        web=Web(),
    ),
    Command(
        "encrypt",
        "hide an image in a cover, in the cloud",
        "images.encrypt",
        lambda r: (
            f"Encrypted {r['name']} as image {r['image_id']} ({r['size']} bytes).\n"
            f"  original:  {r['original']}\n  encrypted: {r['encrypted']}"
        ),
        args=(
            Arg("path", checks.absolute_path(), parse=checks.parse_existing_file),
            Arg(
                "cover",
                checks.absolute_path(optional=True),
                "your own cover image (default: the cloud picks one)",
                option="--cover",
                parse=checks.parse_existing_file,
            ),
            Arg(
                "name",
                checks.text(200, optional=True),
                "the name others see (default: the file name)",
                option="--name",
            ),
        ),
        errors=(*_CLOUD, errors.InvalidImage, cerr.TransferFailed, cerr.ClientError),
        web=Web(upload=True),
    ),
    Command(
        "publish",
        "offer an image for others to discover (its thumbnail shows the cover)",
        "images.publish",
        _published,
        args=(
            _image,
            Arg(
                "preview",
                checks.flag,
                "show a small preview of the ORIGINAL as the thumbnail: every signed-in user sees it",
                option="--preview",
            ),
        ),
        errors=(*_CLOUD, cerr.UnknownImage),
        web=Web(),
    ),
    Command(
        "unpublish",
        "stop offering it",
        "images.unpublish",
        _published,
        args=(_image,),
        errors=(*_CLOUD, cerr.UnknownImage),
        web=Web(),
    ),
    Command(
        "users",
        "online users and the images they offer (thumbnails saved to files)",
        "images.users",
        _users,
        errors=_CLOUD,
        web=Web(),
    ),
    Command(
        "request",
        "ask an owner for an image",
        "viewer.request",
        _asked(more=False),
        args=(
            _user,
            Arg("image", checks.text(255), "the owner's image id or name"),
            Arg("views", checks.views(1), option="--views", parse=checks.parse_views(1), required=True),
            attrs.evolve(_wait, help="wait for the answer and the image"),
        ),
        errors=(*_CLOUD, cerr.UnknownUser, cerr.UnknownImage, cerr.UserOffline),
        web=Web(),
    ),
    Command("inbox", "requests made to you as an owner", "owner.inbox", _inbox, web=Web()),
    Command(
        "accept",
        "accept a request: the image goes peer to peer",
        "owner.accept",
        _accepted,
        args=(
            Arg("request_id", checks.text(64)),
            Arg(
                "views",
                checks.views(1, optional=True),
                "grant this many views instead of the number asked",
                option="--views",
                parse=checks.parse_views(1),
            ),
        ),
        errors=(*_CLOUD, cerr.UnknownRequest, cerr.UnknownImage, cerr.UserOffline, cerr.ClientError),
        web=Web(),
    ),
    Command(
        "reject",
        "reject a request",
        "owner.reject",
        lambda r: f"Rejected request {r['request_id']}.",
        args=(Arg("request_id", checks.text(64)),),
        errors=(*_CLOUD, cerr.UnknownRequest, cerr.ClientError),
        web=Web(),
    ),
    Command(
        "images", "your images, and received images with views left", "viewing.images", _images, web=Web()
    ),
    Command(
        "view",
        "decode a received image into a file (uses one view)",
        "viewing.view",
        _viewed,
        args=(
            _image,
            attrs.evolve(_open, help="open it in the system viewer"),
            # the decoded image comes back in the result (base64) and no file is written
            Arg("memory", checks.flag, cli=False),
        ),
        errors=(cerr.UnknownImage, cerr.AccessDenied, cerr.NotRegistered),
        web=Web(fixed={"memory": True}),  # a web view never writes a file
        opens="path",
    ),
    Command(
        "more-views",
        "ask the owner for more views",
        "viewer.more_views",
        _asked(more=True),
        args=(
            Arg("image", checks.text()),
            Arg("views", checks.views(1), parse=checks.parse_views(1)),
            attrs.evolve(_wait, help="wait for the owner's answer"),
        ),
        errors=(*_CLOUD, cerr.UnknownImage),
        web=Web(),
    ),
    Command(
        "set-views",
        "set how many views a viewer may use in total (0 takes them all back)",
        "owner.set_views",
        _rights_sent,
        args=(_user, Arg("image", checks.text()), Arg("views", checks.views(0), parse=checks.parse_views(0))),
        errors=(*_CLOUD, cerr.UnknownUser, cerr.UnknownImage),
        web=Web(),
    ),
    Command(
        "revoke",
        "take every view back (the same as set-views USER IMAGE 0)",
        "owner.revoke",
        _rights_sent,
        args=(_user, Arg("image", checks.text())),
        errors=(*_CLOUD, cerr.UnknownUser, cerr.UnknownImage),
        web=Web(),
    ),
    Command(
        "trust",
        "accept a user's new public keys (after they told you they changed them)",
        "account.trust",
        _trusted,
        args=(_user,),
        errors=(*_CLOUD, cerr.UnknownUser),
    ),
    Command(
        "status", "who you are, the cloud's coordinator and servers", "account.status", _status, web=Web()
    ),
    Command(
        "counters",
        "what the daemon's listeners refused or dropped (no call to the cloud)",
        "account.counters",
        _json,
        cli=False,
    ),
    Command(
        "web",
        "print a one-time link to the web app the daemon serves",
        "web.link",
        _web_link,
        args=(attrs.evolve(_open, help="open the link in the browser"),),
        errors=(cerr.ClientError,),
        opens="url",
    ),
    Command(
        "shutdown",
        "sign out and stop the daemon",
        "account.shutdown",
        lambda r: "The daemon is stopping.",
    ),
)

BY_NAME: dict[str, Command] = {c.name: c for c in COMMANDS}


def bind(resolve: Callable[[str], Handler]) -> dict[str, Handler]:
    """The daemon's commands, ``{name: handler(args, progress)}``, each checking its args first.

    ``resolve("story.method")`` is the handler itself (``cloudp2p.client.app.ClientApp.handler``).
    """

    def checked(command: Command) -> Handler:
        handler = resolve(command.handler)

        async def run(args: JSONDict, progress: Progress) -> JSONDict:
            return await handler(command.check(args), progress)

        run.__name__ = f"run_{command.name.replace('-', '_')}"
        return run

    return {c.name: checked(c) for c in COMMANDS if c.runs == DAEMON}


def text_of(name: str, result: JSONDict) -> str:
    """How the result of command ``name`` reads (JSON for a command the table does not know)."""
    command = BY_NAME.get(name)
    return command.text(result) if command is not None else _json(result)
