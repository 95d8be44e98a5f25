"""The command table: each command defined once, and every front end built from that one definition."""

from __future__ import annotations

import argparse
import inspect

import pytest

from cloudp2p.client import cli, table
from cloudp2p.client import errors as cerr
from cloudp2p.client.app import ClientApp
from cloudp2p.client.config import ClientConfig
from cloudp2p.client.home import Home
from cloudp2p.web.commands import WEB_COMMANDS, CommandRunner


def _app(tmp_path) -> ClientApp:
    from twisted.internet import task

    return ClientApp(task.Clock(), Home(tmp_path), ClientConfig(servers=(("127.0.0.1", 9),)))


def test_every_daemon_command_names_one_async_handler_of_a_story(tmp_path):
    app = _app(tmp_path)
    seen = {}
    for command in table.COMMANDS:
        if command.runs != table.DAEMON:
            continue
        handler = app.handler(command.handler)
        assert inspect.iscoroutinefunction(handler), command.name
        assert seen.setdefault(command.handler, command.name) == command.name, "one handler, one command"
    assert set(app.commands()) == {c.name for c in table.COMMANDS if c.runs == table.DAEMON}


def test_the_command_line_offers_the_tables_commands_and_sends_their_args():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == {c.name for c in table.COMMANDS if c.cli}
    assert "counters" not in subparsers.choices  # the control socket's only
    args = parser.parse_args(["request", "alice", "cat", "--views", "3", "--wait", "2"])
    assert cli._request(table.BY_NAME["request"], args, None) == {
        "user": "alice",
        "image": "cat",
        "views": 3,
        "wait": 2.0,
    }
    args = parser.parse_args(["view", "cat", "--open"])
    assert cli._request(table.BY_NAME["view"], args, None) == {"image": "cat"}  # --open stays here


def test_help_lists_a_commands_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["accept", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"{cerr.UnknownRequest.exit_code} UnknownRequest" in text and "4 CloudUnreachable" in text


def test_the_web_app_offers_what_the_table_marks_for_it():
    assert WEB_COMMANDS == {
        "register", "login", "logout", "publish", "unpublish", "users", "request", "inbox",
        "accept", "reject", "images", "view", "more-views", "set-views", "revoke", "status",
    }  # fmt: skip
    assert {"encrypt", "shutdown", "web", "counters"}.isdisjoint(WEB_COMMANDS)
    with pytest.raises(ValueError, match="lacks"):
        CommandRunner({})


VALID = {
    "username": "alice",
    "password": "password-1",
    "path": "/tmp/cat.png",
    "cover": None,
    "name": None,
    "image": "cat",
    "preview": False,
    "user": "bob",
    "views": 3,
    "wait": 0.0,
    "request_id": "r1",
    "memory": False,
}


@pytest.mark.parametrize("command", [c for c in table.COMMANDS if c.runs == table.DAEMON and c.args])
def test_every_argument_is_checked_before_the_handler_runs(command):
    """A value of the wrong type in any argument stops the command with InvalidArgument."""
    good = {a.name: VALID[a.name] for a in command.args if a.sent}
    assert command.check(good) == good
    for arg in command.args:
        if not arg.sent:
            continue
        with pytest.raises(cerr.InvalidArgument, match=arg.name):
            command.check({**good, arg.name: object()})


def test_bind_checks_then_calls_the_handler():
    calls = []

    async def handler(args, progress):
        calls.append(args)
        return {"ok": True}

    bound = table.bind(lambda ref: handler)
    coro = bound["set-views"]({"user": "bob", "image": "cat", "views": 0, "extra": 1}, None)
    with pytest.raises(StopIteration):
        coro.send(None)
    assert calls == [{"user": "bob", "image": "cat", "views": 0}]
    coro = bound["set-views"]({"user": "bob", "image": "cat", "views": -1}, None)
    with pytest.raises(cerr.InvalidArgument, match="views"):
        coro.send(None)
    assert len(calls) == 1
