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
from cloudp2p.client.table import BY_NAME, COMMANDS, LOCAL, Arg, Command, text_of
from cloudp2p.client.terminal import clean, printable
from cloudp2p.errors import (
    CloudP2PError,
    ConfigError,
    DaemonNotRunning,
    UsageError,
    error_json,
)


class RemoteError(CloudP2PError):
    """The daemon refused the command."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message", "")))
        self.error = error
        code = error.get("exit_code")
        self.exit_code = code if isinstance(code, int) and 1 <= code <= 125 else 1

    def __str__(self) -> str:
        return str(self.error.get("message") or "the daemon refused the command")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _add_arg(parser: argparse.ArgumentParser, arg: Arg) -> None:
    options: dict[str, Any] = {"help": arg.help or None}
    if arg.is_flag:
        options["action"] = "store_true"
    elif arg.nargs == "append":
        options["action"] = "append"
    else:
        if arg.parse is not None:
            options["type"] = arg.parse
        if arg.nargs is not None:
            options["nargs"] = arg.nargs
    if arg.metavar is not None:
        options["metavar"] = arg.metavar
    if arg.default is not None:
        options["default"] = arg.default
    if arg.option is None:
        parser.add_argument(arg.name, **options)
    else:
        if arg.required:
            options["required"] = True
        parser.add_argument(arg.option, dest=arg.name, **options)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command the table offers on the command line."""
    p = _Parser(prog="cloudp2p", description="Share images hidden in covers, with views the owner controls.")
    p.add_argument("--home", help="the client home (default: $CLOUDP2P_HOME or ~/.local/share/cloudp2p)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the daemon (600)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for command in COMMANDS:
        if not command.cli:
            continue
        codes = ", ".join(f"{code} {what}" for code, what in command.exit_codes())
        s = sub.add_parser(
            command.name, help=command.help, description=command.help, epilog=f"exit codes: 0 done, {codes}"
        )
        for arg in command.args:
            if arg.cli:
                _add_arg(s, arg)
        if command.password is not None:
            s.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
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


def format_result(command: str, r: dict[str, Any]) -> str:
    """The readable text for a command's result (the table's ``text``)."""
    return text_of(command, r)


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


def _request(command: Command, args: argparse.Namespace, stdin: TextIO) -> dict[str, Any]:
    """The control request's ``args`` from the command line, as the table lists them."""
    params = {a.name: getattr(args, a.name) for a in command.args if a.cli and a.sent}
    if command.password is not None:
        params["password"] = _password(args, stdin, confirm=command.password == "new")
    return params


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
    return {"config": str(home.config_file), "servers": args.server, "home": home_path}


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
        command = BY_NAME[args.command]
        if command.runs == LOCAL:
            result = LOCAL_HANDLERS[command.handler](args, home)
        else:
            params = _request(command, args, stdin)
            bar = ProgressBar(stderr)
            conn = DaemonConnection(os.path.join(home, "control.sock"), args.timeout)
            try:
                def show(p: dict[str, Any]) -> None:
                    bar.update(printable(str(p["label"])), p["done"], p["total"])

                result = conn.call(command.name, params, show)
            finally:
                bar.finish()
                conn.close()
            if command.opens is not None and args.open:
                OPENERS[command.opens](result[command.opens], stderr)
        # names and messages from peers and the cloud: no terminal control characters
        text = command.text(clean(result))
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


# The command line's own handlers and openers, as the table names them.
LOCAL_HANDLERS: dict[str, Callable[[argparse.Namespace, str], dict[str, Any]]] = {"local.init": _init}
OPENERS: dict[str, Callable[[str, TextIO], None]] = {"path": _open_viewer, "url": _open_browser}


def main() -> None:
    sys.exit(run(sys.argv[1:], sys.stdout, sys.stderr, sys.stdin))


if __name__ == "__main__":
    main()
