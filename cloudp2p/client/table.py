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
from cloudp2p.client import checks, texts
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
    default: Any = None  # the command line's default (the daemon's check decides what absent means)
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
            Arg(
                "peer_host",
                checks.text(),
                "address for the peer listener",
                option="--peer-host",
                default="127.0.0.1",
            ),
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
        texts.login,
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
        texts.published,
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
        texts.published,
        args=(_image,),
        errors=(*_CLOUD, cerr.UnknownImage),
        web=Web(),
    ),
    Command(
        "users",
        "online users and the images they offer (thumbnails saved to files)",
        "images.users",
        texts.users,
        errors=_CLOUD,
        web=Web(),
    ),
    Command(
        "request",
        "ask an owner for an image",
        "viewer.request",
        texts.asked(more=False),
        args=(
            _user,
            Arg("image", checks.text(255), "the owner's image id or name"),
            Arg("views", checks.views(1), option="--views", parse=checks.parse_views(1), required=True),
            attrs.evolve(_wait, help="wait for the answer and the image"),
        ),
        errors=(*_CLOUD, cerr.UnknownUser, cerr.UnknownImage, cerr.UserOffline),
        web=Web(),
    ),
    Command("inbox", "requests made to you as an owner", "owner.inbox", texts.inbox, web=Web()),
    Command(
        "accept",
        "accept a request: the image goes peer to peer",
        "owner.accept",
        texts.accepted,
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
        "images",
        "your images, and received images with views left",
        "viewing.images",
        texts.images,
        web=Web(),
    ),
    Command(
        "view",
        "decode a received image into a file (uses one view)",
        "viewing.view",
        texts.viewed,
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
        texts.asked(more=True),
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
        texts.rights_sent,
        args=(_user, Arg("image", checks.text()), Arg("views", checks.views(0), parse=checks.parse_views(0))),
        errors=(*_CLOUD, cerr.UnknownUser, cerr.UnknownImage),
        web=Web(),
    ),
    Command(
        "revoke",
        "take every view back (the same as set-views USER IMAGE 0)",
        "owner.revoke",
        texts.rights_sent,
        args=(_user, Arg("image", checks.text())),
        errors=(*_CLOUD, cerr.UnknownUser, cerr.UnknownImage),
        web=Web(),
    ),
    Command(
        "trust",
        "accept a user's new public keys (after they told you they changed them)",
        "account.trust",
        texts.trusted,
        args=(_user,),
        errors=(*_CLOUD, cerr.UnknownUser),
    ),
    Command(
        "status",
        "who you are, the cloud's coordinator and servers",
        "account.status",
        texts.status,
        web=Web(),
    ),
    Command(
        "counters",
        "what the daemon's listeners refused or dropped (no call to the cloud)",
        "account.counters",
        texts.as_json,
        cli=False,
    ),
    Command(
        "web",
        "print a one-time link to the web app the daemon serves",
        "web.link",
        texts.web_link,
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
    return command.text(result) if command is not None else texts.as_json(result)
