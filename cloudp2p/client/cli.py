"""The `cloudp2p` command: parses a story's command line and asks the daemon over its control socket.

Everything but ``init`` talks to the running daemon (`twistd -n cloudp2p-client
--home DIR`). Results print as readable text, or as one JSON object with
``--json``; transfers draw a progress bar on stderr. The exit code says what
happened (each error class's ``exit_code``; 0 is success).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any, TextIO

from cloudp2p.client import errors as cerr
from cloudp2p.client.progress import ProgressBar
from cloudp2p.client.terminal import clean, printable
from cloudp2p.errors import (
    CloudP2PError,
    ConfigError,
    DaemonNotRunning,
    UsageError,
    error_json,
)

MAX_VIEWS = 1000  # the same bound as cloudp2p.client.peer.MAX_VIEWS (kept import-light here)


class RemoteError(CloudP2PError):
    """The daemon refused the command."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message", "")))
        self.error = error
        code = error.get("exit_code")
        self.exit_code = code if isinstance(code, int) and 1 <= code <= 125 else 1

    def __str__(self) -> str:
        return str(self.error.get("message") or "the daemon refused the command")


# -- argument types ---------------------------------------------------------------------------------


def _views(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            n = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= n <= MAX_VIEWS:
            raise argparse.ArgumentTypeError(f"must be between {low} and {MAX_VIEWS}, got {n}")
        return n

    parse.__name__ = "view count"
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds, got {text}")
    return value


def _existing_file(text: str) -> str:
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: cannot read it")
    return path


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cloudp2p", description="Share images hidden in covers, with views the owner controls.")
    p.add_argument("--home", help="the client home (default: $CLOUDP2P_HOME or ~/.local/share/cloudp2p)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the daemon (600)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help)

    s = add("init", "write DIR/client.toml for a cloud (no daemon needed)")
    s.add_argument(
        "--server", action="append", required=True, metavar="HOST:PORT", help="a cloud server (repeat)"
    )
    s.add_argument("--peer-host", default="127.0.0.1", help="address for the peer listener")
    s.add_argument("--force", action="store_true", help="overwrite an existing client.toml")

    for name, what in (("register", "create an account (gets the globally unique id)"), ("login", "sign in")):
        s = add(name, what)
        s.add_argument("username", nargs=None if name == "register" else "?")
        s.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add("logout", "sign out (presence ends)")

    s = add("encrypt", "hide an image in a cover, in the cloud")
    s.add_argument("path", type=_existing_file)
    s.add_argument("--cover", type=_existing_file, help="your own cover image (default: the cloud picks one)")
    s.add_argument("--name", help="the name others see (default: the file name)")

    s = add("publish", "offer an image for others to discover (its thumbnail shows the cover)")
    s.add_argument("image", help="image id or name")
    s.add_argument(
        "--preview",
        action="store_true",
        help="show a small preview of the ORIGINAL as the thumbnail: every signed-in user sees it",
    )
    add("unpublish", "stop offering it").add_argument("image", help="image id or name")
    add("users", "online users and the images they offer (thumbnails saved to files)")

    s = add("request", "ask an owner for an image")
    s.add_argument("user")
    s.add_argument("image", help="the owner's image id or name")
    s.add_argument("--views", type=_views(1), required=True)
    s.add_argument("--wait", type=_seconds, metavar="SECONDS", help="wait for the answer and the image")

    add("inbox", "requests made to you as an owner")
    s = add("accept", "accept a request: the image goes peer to peer")
    s.add_argument("request_id")
    s.add_argument("--views", type=_views(1), help="grant this many views instead of the number asked")
    mode = s.add_mutually_exclusive_group()
    mode.add_argument(
        "--enforced",
        action="store_true",
        help="the cloud counts every view and revoke works on unviewed copies (viewing needs the cloud)",
    )
    mode.add_argument(
        "--offline", action="store_true", help="an offline-capable copy, even if enforced is your default"
    )
    add("reject", "reject a request").add_argument("request_id")

    add("images", "your images, and received images with views left")
    s = add("view", "decode a received image into a file (uses one view)")
    s.add_argument("image", help="image id or name")
    s.add_argument("--open", action="store_true", help="open it in the system viewer")

    s = add("more-views", "ask the owner for more views")
    s.add_argument("image")
    s.add_argument("views", type=_views(1))
    s.add_argument("--wait", type=_seconds, metavar="SECONDS", help="wait for the owner's answer")

    s = add("set-views", "set how many views a viewer may use in total (0 takes them all back)")
    s.add_argument("user")
    s.add_argument("image")
    s.add_argument("views", type=_views(0))
    s = add("revoke", "take every view back (the same as set-views USER IMAGE 0)")
    s.add_argument("user")
    s.add_argument("image")

    s = add("trust", "accept a user's new public keys (after they told you they changed them)")
    s.add_argument("user")
    add("status", "who you are, the cloud's coordinator and servers")
    s = add("web", "print a one-time link to the web app the daemon serves")
    s.add_argument("--open", action="store_true", help="open the link in the browser")
    add("shutdown", "sign out and stop the daemon")
    return p


# -- talking to the daemon -------------------------------------------------------------------------


class DaemonConnection:
    """A blocking line-JSON client for ``DIR/control.sock``."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            self.sock.close()
            raise DaemonNotRunning(f"(no daemon listening on {path})") from None
        except OSError as e:
            self.sock.close()
            raise DaemonNotRunning(f"({path}: {e.strerror})") from None
        self._buffer = b""

    def close(self) -> None:
        self.sock.close()

    def call(
        self, cmd: str, args: dict[str, Any], progress: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        try:
            self.sock.sendall(json.dumps({"id": 1, "cmd": cmd, "args": args}).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon hung up at once (it refused us): its reason is waiting to be read
        while True:
            msg = self._read()
            if "progress" in msg and msg.get("id") == 1:
                progress(msg["progress"])
                continue
            if msg.get("id") not in (1, None):
                continue
            if msg.get("ok"):
                return msg.get("result") or {}
            raise RemoteError(msg.get("error") or {})

    def _read(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise cerr.ClientError("the daemon did not answer in time (see --timeout)") from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise cerr.ControlProtocolError("the daemon closed the connection (did it stop?)")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            msg = json.loads(line)
        except ValueError:
            raise cerr.ControlProtocolError("the daemon sent a line that is not JSON") from None
        if not isinstance(msg, dict):
            raise cerr.ControlProtocolError("the daemon sent something that is not an object")
        return msg


# -- output ----------------------------------------------------------------------------------------


def _fmt_views(n: Any) -> str:
    return f"{n} view{'s' if n != 1 else ''}"


def format_result(command: str, r: dict[str, Any]) -> str:
    """The readable text for a command's result."""
    if command == "register":
        return f"Registered {r['username']} with id {r['user_id']}."
    if command == "login":
        lines = [f"Signed in as {r['username']} (id {r['user_id']})."]
        lines += [f"  applied while you were away: {a}" for a in r.get("applied", [])]
        return "\n".join(lines)
    if command == "logout":
        return f"Signed out {r.get('username') or ''}.".replace(" .", ".")
    if command == "encrypt":
        return (
            f"Encrypted {r['name']} as image {r['image_id']} ({r['size']} bytes).\n"
            f"  original:  {r['original']}\n  encrypted: {r['encrypted']}"
        )
    if command in ("publish", "unpublish"):
        state = "now offered to others" if r["published"] else "no longer offered"
        text = f"Image {r['name']} ({r['image_id']}) is {state}."
        if r["published"]:
            shows = "a preview of the original" if r.get("preview") else "the cover, not the image"
            text += f"\n  its thumbnail shows {shows}"
        return text
    if command == "trust":
        if r.get("previous") is None:
            return f"Now trusting {r['user']}'s keys (ed25519 {r['ed25519']})."
        if r.get("changed"):
            return f"Now trusting {r['user']}'s NEW keys (ed25519 {r['ed25519']}; was {r['previous']})."
        return f"{r['user']}'s keys are unchanged (ed25519 {r['ed25519']})."
    if command == "users":
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
    if command in ("request", "more-views"):
        how = "sent to" if r["delivery"] == "peer" else "queued in the directory (offline) for"
        more = "more " if command == "more-views" else ""
        name = r.get("image_name") or r["image_id"]
        text = (
            f"Request {r['request_id']} for {r['views']} {more}view{'s' if r['views'] != 1 else ''} "
            f"of {name} {how} {r['owner']}."
        )
        waited = {
            "received": f"\n{r['owner']} accepted: {name} received, {_fmt_views(r.get('views_left'))} left.",
            "rejected": f"\n{r['owner']} rejected the request.",
            "failed": "\nThe owner accepted but the transfer failed; it resumes on its own.",
            "sent": "\nNo answer yet; `cloudp2p images` shows when it arrives.",
            "queued": "\nNo answer yet; `cloudp2p images` shows when it arrives.",
            "fetching": "\nStill receiving; `cloudp2p images` shows when it arrives.",
        }
        return text + waited.get(r.get("state", ""), "")
    if command == "inbox":
        if not r["requests"]:
            return "No request."
        return "\n".join(
            f"{q['request_id']}  {q['from']} asks {_fmt_views(q['views'])} of {q['image_name']} "
            f"({q['kind']}{', has used ' + str(q['used']) if q.get('used') else ''})  [{q['state']}]"
            for q in r["requests"]
        )
    if command == "accept":
        if r.get("kind") == "more":
            return f"{r['viewer']} may now view {r['image_name']} {_fmt_views(r['views'])} in total."
        if r.get("delivered") is False:
            return f"Offered {r['image_name']} to {r['viewer']}; they have not finished fetching it yet."
        how = " (enforced: the cloud counts each view)" if r.get("mode") == "enforced" else ""
        return f"Sent {r['image_name']} to {r['viewer']} with {_fmt_views(r['views'])}{how}."
    if command == "reject":
        return f"Rejected request {r['request_id']}."
    if command == "images":
        lines = ["Your images:"] if r["owned"] else ["You own no image yet."]
        for im in r["owned"]:
            pub = "published" if im["published"] else "private"
            lines.append(f"    {im['name']}  id {im['image_id']}  {pub}  {im['encrypted']}")
            modes = im.get("grant_modes", {})
            for viewer, views in sorted(im.get("grants", {}).items()):
                mode = modes.get(viewer, "offline")
                lines.append(f"        {viewer}: {_fmt_views(views)} granted ({mode})")
        lines.append("Received images:" if r["received"] else "No received image.")
        for im in r["received"]:
            left = _fmt_views(im["views_left"])
            mode = im.get("mode", "offline")
            lines.append(f"    {im['name']}  id {im['image_id']}  from {im['owner']}  {left} left  ({mode})")
        waiting = [q for q in r.get("requests", []) if q["state"] != "received"]
        if waiting:
            lines.append("Your requests:")
        for q in waiting:
            extra = f" {q['done']}/{q['total']} bytes" if q["state"] == "fetching" else ""
            extra += f" ({q['error']})" if q.get("error") else ""
            lines.append(f"    {q['request_id']}  {q['image_name']} from {q['owner']}: {q['state']}{extra}")
        return "\n".join(lines)
    if command == "view":
        if r["shown"] == "cover":
            return f"No views left for {r['name']}: the cover is shown instead.\n  {r['path']}"
        return f"Decoded {r['name']} ({_fmt_views(r['views_left'])} left).\n  {r['path']}"
    if command in ("set-views", "revoke"):
        how = "applied at once" if r["delivery"] == "peer" else "queued until they sign in"
        name = r.get("image_name") or r["image_id"]
        return f"{r['viewer']} may now view {name} {_fmt_views(r['views'])} in total ({how})."
    if command == "status":
        me, cloud = r["me"], r["cloud"]
        lines = [
            f"user:        {me.get('username') or '(not registered)'}"
            + (f" (id {me['user_id']})" if me.get("user_id") else ""),
            f"session:     {'signed in' if me.get('signed_in') else 'signed out'}",
            f"peer:        {me.get('peer')}",
            f"cloud:       {'reachable' if cloud.get('reachable') else 'unreachable'}",
            f"coordinator: {cloud.get('coordinator') if cloud.get('coordinator') is not None else 'unknown'}",
        ]
        for s in cloud.get("servers", []):
            lines.append(f"  {s}")
        return "\n".join(lines)
    if command == "web":
        lines = [f"Open {r['url']}", f"  (the link works once, within {r['expires_in']:.0f} s)"]
        lines += [f"warning: {w}" for w in r.get("warnings", [])]
        return "\n".join(lines)
    if command == "shutdown":
        return "The daemon is stopping."
    return json.dumps(r, indent=2, sort_keys=True)


# -- main ------------------------------------------------------------------------------------------


def _password(args: argparse.Namespace, stdin: TextIO, confirm: bool) -> str:
    if args.password_stdin:
        pw = stdin.readline().rstrip("\n")
    elif stdin.isatty():
        pw = getpass.getpass("password: ")
        if confirm and getpass.getpass("again: ") != pw:
            raise UsageError("the two passwords differ")
    else:
        raise UsageError("no terminal to ask the password on; use --password-stdin")
    if not pw:
        raise UsageError("the password is empty")
    return pw


def _request(args: argparse.Namespace, stdin: TextIO) -> tuple[str, dict[str, Any]]:
    c = args.command
    if c == "register":
        return c, {"username": args.username, "password": _password(args, stdin, confirm=True)}
    if c == "login":
        return c, {"username": args.username, "password": _password(args, stdin, confirm=False)}
    if c == "encrypt":
        return c, {"path": args.path, "cover": args.cover, "name": args.name}
    if c == "publish":
        return c, {"image": args.image, "preview": args.preview}
    if c in ("unpublish", "view"):
        return c, {"image": args.image}
    if c == "trust":
        return c, {"user": args.user}
    if c == "request":
        return c, {"user": args.user, "image": args.image, "views": args.views, "wait": args.wait}
    if c == "accept":
        return c, {
            "request_id": args.request_id,
            "views": args.views,
            "enforced": args.enforced,
            "offline": args.offline,
        }
    if c == "reject":
        return c, {"request_id": args.request_id}
    if c == "more-views":
        return c, {"image": args.image, "views": args.views, "wait": args.wait}
    if c == "set-views":
        return c, {"user": args.user, "image": args.image, "views": args.views}
    if c == "revoke":
        return c, {"user": args.user, "image": args.image}
    return c, {}


def _init(args: argparse.Namespace, home_path: str) -> dict[str, Any]:
    from cloudp2p.client import config as cconfig
    from cloudp2p.client.home import Home
    from cloudp2p.config import parse_hostport

    home = Home(home_path)
    try:
        servers = [parse_hostport(s) for s in args.server]
        text = cconfig.render(servers, peer_host=args.peer_host)
    except ValueError as e:
        raise UsageError(f"--server: {e}") from None
    home.create()
    if home.config_file.exists() and not args.force:
        raise ConfigError(f"{home.config_file} exists already (use --force to replace it)")
    home.write_bytes(home.config_file, text.encode())
    return {"config": str(home.config_file), "servers": args.server}


def _open_viewer(path: str, stderr: TextIO) -> None:
    """Show ``path`` in the desktop's viewer. The view is already used: never fail the command here."""
    opener = shutil.which("xdg-open") or shutil.which("open")
    if opener is None:
        stderr.write(f"cloudp2p: no system viewer found (xdg-open); open {path} yourself\n")
        return
    try:
        subprocess.Popen([opener, path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError as e:
        stderr.write(f"cloudp2p: could not start {opener}: {e.strerror}; open {path} yourself\n")


def _open_browser(url: str, stderr: TextIO) -> None:
    """Open the link in the user's browser; the link is printed anyway, so never fail here."""
    import webbrowser

    try:
        opened = webbrowser.open(url)
    except webbrowser.Error:
        opened = False
    if not opened:
        stderr.write("cloudp2p: no browser found; open the link yourself\n")


def run(argv: list[str], stdout: TextIO, stderr: TextIO, stdin: TextIO) -> int:
    json_out = "--json" in argv
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # --help
            return int(e.code or 0)
        from cloudp2p.client.home import default_home

        home = os.path.abspath(args.home) if args.home else str(default_home())
        if args.command == "init":
            result = _init(args, home)
            text = f"Wrote {result['config']}; start the daemon with: twistd -n cloudp2p-client --home {home}"
        else:
            cmd, params = _request(args, stdin)
            bar = ProgressBar(stderr)
            conn = DaemonConnection(os.path.join(home, "control.sock"), args.timeout)
            try:
                result = conn.call(
                    cmd, params, lambda p: bar.update(printable(str(p["label"])), p["done"], p["total"])
                )
            finally:
                bar.finish()
                conn.close()
            if cmd == "view" and args.open:
                _open_viewer(result["path"], stderr)
            if cmd == "web" and args.open:
                _open_browser(result["url"], stderr)
            # names and messages from peers and the cloud: no terminal control characters
            text = format_result(cmd, clean(result))
    except CloudP2PError as e:
        code = e.exit_code
        if json_out:
            err = e.error if isinstance(e, RemoteError) else error_json(e)
            stdout.write(json.dumps({"ok": False, "error": err}, sort_keys=True) + "\n")
        stderr.write(f"cloudp2p: error: {printable(str(e), keep_newlines=True)}\n")
        return code
    except KeyboardInterrupt:
        stderr.write("cloudp2p: interrupted (the daemon finishes or resumes the work on its own)\n")
        return 130
    if json_out:
        stdout.write(json.dumps({"ok": True, "result": result}, sort_keys=True) + "\n")
    else:
        stdout.write(text + "\n")
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:], sys.stdout, sys.stderr, sys.stdin))


if __name__ == "__main__":
    main()
