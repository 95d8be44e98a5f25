"""The control socket (real UNIX socket, uid check), the `cloudp2p` command and the twistd plugin."""

from __future__ import annotations

import io
import json
import os
import socket
import stat

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, threads

from cloudp2p.client import cli
from cloudp2p.client import errors as cerr
from cloudp2p.client.control import ControlFactory
from cloudp2p.client.progress import ProgressBar, render
from cloudp2p.errors import CloudUnreachable, exit_code_for


async def _echo(args, progress):
    progress("moving", 5, 10)
    progress("moving", 10, 10)
    return {"echo": args}


async def _cloud_down(args, progress):
    raise CloudUnreachable()


async def _bug(args, progress):
    raise ZeroDivisionError("oops")


COMMANDS = {"echo": _echo, "down": _cloud_down, "bug": _bug, "unknown_image": None}


def _listen(tmp_path, allowed_uid=None):
    commands = {k: v for k, v in COMMANDS.items() if v is not None}

    async def unknown(args, progress):
        raise cerr.UnknownImage("('x')")

    commands["unknown_image"] = unknown
    path = str(tmp_path / "c.sock")
    port = reactor.listenUNIX(path, ControlFactory(commands, allowed_uid), mode=0o600)
    return path, port


def _raw(path, lines):
    """Send raw lines, return every reply line until the server closes or 2 s pass."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    s.connect(path)
    for line in lines:
        try:
            s.sendall(line)
        except BrokenPipeError:  # the server refused us and closed: read what it said
            break
    out = b""
    try:
        while out.count(b"\n") < len(lines) or not lines:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except TimeoutError:
        pass
    s.close()
    return [json.loads(x) for x in out.splitlines()]


@pytest_twisted.inlineCallbacks
def test_request_progress_and_reply(tmp_path):
    path, port = _listen(tmp_path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        seen = []

        def call():
            conn = cli.DaemonConnection(path, 5.0)
            try:
                return conn.call("echo", {"a": 1}, seen.append)
            finally:
                conn.close()

        result = yield threads.deferToThread(call)
        assert result == {"echo": {"a": 1}}
        assert seen == [
            {"label": "moving", "done": 5, "total": 10},
            {"label": "moving", "done": 10, "total": 10},
        ]
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_errors_carry_exit_codes(tmp_path):
    path, port = _listen(tmp_path)
    try:
        replies = yield threads.deferToThread(
            _raw,
            path,
            [
                b"not json\n",
                b'{"id": 2, "cmd": "nope"}\n',
                b'{"id": 3, "cmd": "down"}\n',
                b'{"id": 4, "cmd": "bug"}\n',
                b'{"id": 5, "cmd": "unknown_image"}\n',
                b'{"id": 6, "cmd": "echo", "args": []}\n',
                b'{"id": 7, "cmd": "echo", "args": {"b": 2}}\n',
            ],
        )
        by_id = {r.get("id"): r for r in replies if "progress" not in r}
        assert by_id[None]["error"]["type"] == "ControlProtocolError"
        assert by_id[2]["error"]["exit_code"] == cerr.ControlProtocolError.exit_code
        assert (
            by_id[3]["error"]["exit_code"] == 4 and "No server of the cloud" in by_id[3]["error"]["message"]
        )
        assert by_id[4]["error"]["exit_code"] == 1 and "internal error" in by_id[4]["error"]["message"]
        assert by_id[5]["error"]["exit_code"] == cerr.UnknownImage.exit_code
        assert by_id[5]["error"]["code"] == "unknown_image"
        assert by_id[7]["result"] == {"echo": {"b": 2}}
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_other_uid_is_refused(tmp_path):
    path, port = _listen(tmp_path, allowed_uid=os.getuid() + 1)
    try:
        replies = yield threads.deferToThread(_raw, path, [b'{"id": 1, "cmd": "echo"}\n'])
        assert len(replies) == 1
        assert replies[0]["error"]["type"] == "ControlProtocolError"
        assert f"uid {os.getuid()} are refused" in replies[0]["error"]["message"]

        def through_the_cli():
            conn = cli.DaemonConnection(path, 5.0)
            try:
                conn.call("echo", {}, lambda p: None)
            finally:
                conn.close()

        with pytest.raises(cli.RemoteError, match="are refused"):
            yield threads.deferToThread(through_the_cli)
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_overlong_line_is_refused(tmp_path):
    path, port = _listen(tmp_path)
    try:
        replies = yield threads.deferToThread(_raw, path, [b"x" * (300 * 1024) + b"\n"])
        assert "longer than" in replies[0]["error"]["message"]
    finally:
        yield port.stopListening()


# -- the twistd plugin ----------------------------------------------------------------------------


def test_options_validate_early(tmp_path):
    from twisted.python import usage

    from cloudp2p.client.tap import Options

    home = tmp_path / "h"
    with pytest.raises(usage.UsageError, match="client.toml: no such file"):
        Options().parseOptions(["--home", str(home)])
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    (home / "client.toml").write_text('[client]\nservers = ["127.0.0.1:9101"]\ntypo = 1\n')
    with pytest.raises(usage.UsageError, match="unknown key 'typo'"):
        Options().parseOptions(["--home", str(home)])
    (home / "client.toml").write_text('[client]\nservers = ["localhost:9101"]\n')
    with pytest.raises(usage.UsageError, match="must be an IP address"):
        Options().parseOptions(["--home", str(home)])
    (home / "client.toml").write_text('[client]\nservers = ["127.0.0.1:9101"]\n')
    (home / "state.json").write_text("{broken")
    with pytest.raises(usage.UsageError, match="state.json: cannot read"):
        Options().parseOptions(["--home", str(home)])
    (home / "state.json").unlink()
    (home / "identity.json").write_text('{"version": 1}')
    with pytest.raises(usage.UsageError, match="identity.json: the key file is damaged"):
        Options().parseOptions(["--home", str(home)])
    (home / "identity.json").unlink()
    Options().parseOptions(["--home", str(home)])


@pytest_twisted.inlineCallbacks
def test_make_service_serves_the_control_socket(tmp_path):
    from cloudp2p.client.tap import Options, makeService

    home = tmp_path / "h"
    home.mkdir(mode=0o700)
    (home / "client.toml").write_text('[client]\nservers = ["127.0.0.1:9"]\nrequest_timeout = 0.3\n')
    options = Options()
    options.parseOptions(["--home", str(home)])
    svc = makeService(options, reactor)
    svc.startService()
    try:
        sock = str(home / "control.sock")
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        out, err = io.StringIO(), io.StringIO()
        code = yield threads.deferToThread(
            cli.run, ["--home", str(home), "--json", "status"], out, err, io.StringIO()
        )
        assert code == 0, err.getvalue()
        status = json.loads(out.getvalue())["result"]
        assert status["me"]["signed_in"] is False and status["me"]["peer"].startswith("127.0.0.1:")
        assert status["cloud"]["reachable"] is False  # nothing listens on port 9
        for name in ("identity.json",):
            assert stat.S_IMODE(os.stat(home / name).st_mode) == 0o600
    finally:
        yield svc.stopService()
        yield defer.succeed(None)


# -- the command line -----------------------------------------------------------------------------


def _cli(*argv, stdin=""):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(list(argv), out, err, io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["request", "alice", "cat", "--views", "-1"], "between 1 and 1000"),
        (["request", "alice", "cat", "--views", "1000000"], "between 1 and 1000"),
        (["request", "alice", "cat", "--views", "two"], "not a whole number"),
        (["request", "alice", "cat"], "--views"),
        (["set-views", "bob", "cat", "-5"], "between 0 and 1000"),
        (["more-views", "cat", "0"], "between 1 and 1000"),
        (["encrypt", "/no/such/file.png"], "no such file"),
        (["encrypt", "x.png", "--cover", "/no/such/cover.png"], "no such file"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_command_lines_exit_2_and_touch_nothing(tmp_path, argv, needle):
    code, out, err = _cli("--home", str(tmp_path / "h"), *argv)
    assert code == 2 and needle in err
    assert not (tmp_path / "h").exists()


def test_daemon_not_running(tmp_path):
    code, out, err = _cli("--home", str(tmp_path), "status")
    assert code == 6 and "daemon is not running" in err
    code, out, err = _cli("--home", str(tmp_path), "--json", "status")
    assert code == 6 and json.loads(out)["error"]["type"] == "DaemonNotRunning"


def test_password_needs_a_terminal_or_stdin(tmp_path):
    code, out, err = _cli("--home", str(tmp_path), "login")
    assert code == 2 and "--password-stdin" in err
    code, out, err = _cli("--home", str(tmp_path), "login", "--password-stdin", stdin="\n")
    assert code == 2 and "empty" in err


def test_init(tmp_path):
    home = tmp_path / "h"
    assert (
        _cli("--home", str(home), "init", "--server", "127.0.0.1:9101", "--server", "127.0.0.1:9102")[0] == 0
    )
    text = (home / "client.toml").read_text()
    assert '"127.0.0.1:9101", "127.0.0.1:9102"' in text
    assert stat.S_IMODE(os.stat(home / "client.toml").st_mode) == 0o600
    code, _, err = _cli("--home", str(home), "init", "--server", "127.0.0.1:9101")
    assert code == 3 and "exists already" in err
    assert _cli("--home", str(home), "init", "--server", "127.0.0.1:1", "--force")[0] == 0
    code, _, err = _cli("--home", str(home), "init", "--server", "nohost")
    assert code == 2


SAMPLES = {
    "register": {"username": "a", "user_id": "u"},
    "login": {"username": "a", "user_id": "u", "applied": ["x revoked"]},
    "logout": {"username": "a"},
    "encrypt": {"name": "n", "image_id": "i", "size": 3, "original": "/o", "encrypted": "/e"},
    "publish": {"name": "n", "image_id": "i", "published": True},
    "users": {
        "users": [
            {
                "username": "a",
                "me": True,
                "images": [{"name": "n", "image_id": "i", "size": 1, "thumbnail": "/t.png"}],
            }
        ]
    },
    "request": {"request_id": "r", "views": 2, "image_id": "i", "delivery": "queued", "owner": "a"},
    "inbox": {
        "requests": [
            {
                "request_id": "r",
                "from": "b",
                "views": 1,
                "image_name": "n",
                "kind": "share",
                "state": "pending",
            }
        ]
    },
    "accept": {"image_name": "n", "viewer": "b", "views": 2},
    "reject": {"request_id": "r"},
    "images": {
        "owned": [{"name": "n", "image_id": "i", "published": False, "encrypted": "/e", "grants": {"b": 2}}],
        "received": [{"name": "n", "image_id": "i", "owner": "a", "views_left": 1}],
    },
    "view": {"shown": "cover", "name": "n", "path": "/p", "views_left": 0},
    "set-views": {"viewer": "b", "views": 1, "image_id": "i", "delivery": "peer"},
    "status": {
        "me": {"username": "a", "user_id": "u", "signed_in": True, "peer": "1:2"},
        "cloud": {"reachable": True, "coordinator": 2, "servers": ["1"]},
    },
    "shutdown": {},
    "trust": {"user": "a", "user_id": "u", "ed25519": "SHA256:1", "previous": "SHA256:0", "changed": True},
}


@pytest.mark.parametrize("command", sorted(SAMPLES))
def test_every_result_formats(command):
    text = cli.format_result(command, SAMPLES[command])
    assert text and "{" not in text


def test_progress_bar():
    assert render("x", 5, 10, width=10).startswith("x [#####.....]  50%")
    out = io.StringIO()
    bar = ProgressBar(out, tty=False)
    for done in range(0, 101, 5):
        bar.update("copy", done, 100)
    bar.finish()
    assert out.getvalue().count("\n") == 5  # 0, 25, 50, 75, 100 %
    tty = io.StringIO()
    bar = ProgressBar(tty, tty=True)
    bar.update("copy", 1, 2)
    bar.finish()
    assert tty.getvalue().startswith("\r") and tty.getvalue().endswith("\n")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300).filter(lambda b: b"\n" not in b and b"\r" not in b), max_size=5))
def test_control_garbage_lines_get_error_replies_never_a_crash(lines):
    from unittest import mock

    from twisted.internet.testing import StringTransport

    factory = ControlFactory({"echo": _echo}, allowed_uid=os.getuid())
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    transport.getHandle = lambda: None
    with mock.patch("cloudp2p.client.control.peer_uid", lambda sock: os.getuid()):
        proto.makeConnection(transport)
    assert not proto.refused
    for line in lines:
        proto.dataReceived(line + b"\n")
    replies = [json.loads(x) for x in transport.value().splitlines()]
    finals = [r for r in replies if "progress" not in r]
    assert len(finals) == len(lines)  # one reply per line, whatever it held
    assert all(r["ok"] is False and r["error"]["type"] == "ControlProtocolError" for r in finals)
    assert not transport.disconnecting


def test_other_areas_errors_have_exit_codes():
    from cloudp2p.encryption.errors import CorruptContainerError, WrongKeyError
    from cloudp2p.transfer.errors import TransferTimeout

    assert exit_code_for(WrongKeyError()) == exit_code_for(cerr.AccessDenied()) == 20
    assert exit_code_for(CorruptContainerError()) == 20
    assert exit_code_for(TransferTimeout()) == exit_code_for(cerr.TransferFailed()) == 19
    assert exit_code_for(ValueError()) == 1


def test_exit_codes_are_the_documented_ones():
    """Scripts rely on these numbers (docs/client.md): each error class carries its own."""
    from cloudp2p import errors

    documented = {
        errors.CloudP2PError: 1, errors.UsageError: 2, cerr.InvalidArgument: 2, errors.ConfigError: 3,
        errors.CloudUnreachable: 4, errors.RequestFailed: 5, errors.RateLimited: 8,
        errors.DaemonNotRunning: 6,
        errors.InvalidImage: 7, cerr.ClientError: 10, cerr.HomeError: 11, cerr.NotRegistered: 12,
        cerr.AlreadyRegistered: 13, cerr.NotSignedIn: 14, cerr.UnknownImage: 15,
        cerr.UnknownRequest: 16, cerr.UnknownUser: 17, cerr.UserOffline: 18, cerr.TransferFailed: 19,
        cerr.AccessDenied: 20, cerr.ControlProtocolError: 21, cerr.PeerMessageError: 22,
        errors.ServerIdentityError: 23, errors.ServerUntrusted: 24, errors.ServerCertificateExpired: 25,
        errors.ServerNameMismatch: 26, errors.SecureHandshakeFailed: 27, cerr.KeyChanged: 28,
    }
    assert {cls: cls.exit_code for cls in documented} == documented


ESCAPES = "\x1b]0;owned\x07\x1b[2J\x1b[1A\r\u202e"


@pytest_twisted.inlineCallbacks
def test_names_from_peers_reach_the_terminal_without_control_characters(tmp_path):
    """Issue 11, finding 11: an image or user name with ESC/CSI/OSC sequences prints inert."""

    async def images(args, progress):
        progress(f"receiving {ESCAPES}", 1, 2)
        return {
            "owned": [],
            "received": [{"name": f"cat{ESCAPES}", "image_id": "i", "owner": f"b{ESCAPES}", "views_left": 1}],
        }

    async def view(args, progress):
        raise cerr.UnknownImage(f"({ESCAPES!s})")

    home = tmp_path / "h"
    home.mkdir()
    port = reactor.listenUNIX(str(home / "control.sock"), ControlFactory({"images": images, "view": view}))
    try:
        code, out, err = yield threads.deferToThread(_cli, "--home", str(home), "images")
        assert code == 0 and "cat" in out
        code2, out2, err2 = yield threads.deferToThread(_cli, "--home", str(home), "view", "x")
        assert code2 == 15 and "No such image" in err2
        code3, out3, _ = yield threads.deferToThread(_cli, "--home", str(home), "--json", "images")
    finally:
        yield port.stopListening()
    for text in (out, err, err2):
        assert not any(ch in text for ch in "\x1b\x07\r\u202e"), repr(text)
    assert "\ufffd" in out and "\ufffd" in err2
    # --json escapes them (JSON strings cannot hold raw control characters) and keeps the data
    assert "\x1b" not in out3 and json.loads(out3)["result"]["received"][0]["name"] == f"cat{ESCAPES}"
