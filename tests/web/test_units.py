"""The web app's parts without a browser: the guard's decisions, views kept in memory, the [web] config."""

from __future__ import annotations

import pytest

from cloudp2p.client import config as cconfig
from cloudp2p.errors import ConfigError
from cloudp2p.web import security
from cloudp2p.web.security import Guard
from cloudp2p.web.shown import GRACE, MAX_SHOWN, ShownImages


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _guard(clock: Clock, **kwargs) -> Guard:
    return Guard(8080, clock=clock, **kwargs)


def _check(guard: Guard, **overrides):
    request = {
        "method": "POST",
        "host": "127.0.0.1:8080",
        "origin": "http://127.0.0.1:8080",
        "cookie": None,
        "csrf": None,
        "needs_session": True,
    }
    request.update(overrides)
    return guard.check(**request)


def test_a_ticket_opens_one_session_once_and_expires():
    clock = Clock()
    guard = _guard(clock)
    ticket = guard.new_ticket()
    session = guard.redeem(ticket)
    assert session is not None and guard.session(session.token) == session
    assert guard.redeem(ticket) is None  # one time only
    late = guard.new_ticket()
    clock.now += security.TICKET_SECONDS + 1
    assert guard.redeem(late) is None
    assert guard.redeem("made-up") is None and guard.redeem("") is None
    cookie = guard.cookie(session)
    assert (
        cookie.startswith("cloudp2p_session_8080=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    )


def test_tickets_and_sessions_are_bounded():
    guard = _guard(Clock())
    tickets = [guard.new_ticket() for _ in range(security.MAX_TICKETS + 5)]
    assert guard.redeem(tickets[0]) is None and guard.redeem(tickets[-1]) is not None
    sessions = [guard.redeem(guard.new_ticket()) for _ in range(security.MAX_SESSIONS + 3)]
    assert guard.session(sessions[0].token) is None and guard.session(sessions[-1].token) is not None


def test_the_checks_in_order():
    guard = _guard(Clock())
    session = guard.redeem(guard.new_ticket())
    ok = {"cookie": session.token, "csrf": session.csrf}
    assert _check(guard, **ok) == (session, None)
    for host in ("localhost:8080", "LOCALHOST:8080", "[::1]:8080"):
        assert _check(guard, **ok, host=host, origin=f"http://{host.lower()}")[1] is None
    for host in (None, "", "evil.example:8080", "127.0.0.1:8081", "127.0.0.1", "10.0.0.1:8080"):
        assert _check(guard, **ok, host=host)[1].status == 421, host
    assert _check(guard, **ok, method="DELETE")[1].status == 405
    for origin in (None, "null", "http://evil.example", "http://127.0.0.1:8081", "https://127.0.0.1:8080"):
        assert _check(guard, **ok, origin=origin)[1].status == 403, origin
    assert _check(guard, cookie=session.token, csrf=None)[1].message == security.NO_CSRF
    assert _check(guard, cookie=session.token, csrf=session.token)[1].message == security.NO_CSRF
    assert _check(guard, cookie=None, csrf=session.csrf)[1].message == security.NO_SESSION
    # reading needs the cookie but neither Origin nor CSRF; pages need neither
    assert _check(guard, method="GET", origin=None, cookie=session.token) == (session, None)
    assert _check(guard, method="GET", origin=None, needs_session=False) == (None, None)
    assert _check(guard, method="GET", origin=None)[1].message == security.NO_SESSION


def test_a_configured_network_host_is_allowed_too():
    guard = _guard(Clock(), extra_host="192.168.1.20")
    session = guard.redeem(guard.new_ticket())
    host = "192.168.1.20:8080"
    assert (
        _check(guard, host=host, origin=f"http://{host}", cookie=session.token, csrf=session.csrf)[1] is None
    )
    assert "[fe80::1]:8080" in _guard(Clock(), extra_host="fe80::1").hosts


def test_views_in_memory_are_forgotten_after_the_countdown():
    clock = Clock()
    shown = ShownImages(clock, seconds=10)
    key = shown.keep(b"pixels", "image/png")
    clock.now += 10 + GRACE - 0.1
    assert shown.get(key).data == b"pixels"
    clock.now += 0.2
    assert shown.get(key) is None and len(shown) == 0
    keys = [shown.keep(bytes([i]), "image/png") for i in range(MAX_SHOWN + 2)]
    assert shown.get(keys[0]) is None and shown.get(keys[-1]).data == bytes([MAX_SHOWN + 1])
    assert len(shown) == MAX_SHOWN


def _config(tmp_path, web: str):
    path = tmp_path / "client.toml"
    path.write_text('[client]\nservers = ["127.0.0.1:9101"]\n' + web)
    return cconfig.load(str(path))


def test_web_config(tmp_path):
    default = _config(tmp_path, "")
    assert (default.web.enabled, default.web.host, default.web.port) == (True, "127.0.0.1", 0)
    assert _config(tmp_path, "[web]\nport = 8123\nview_seconds = 3\n").web.port == 8123
    with pytest.raises(ConfigError, match=r"\[web\] host: .*not a loopback address.*accept_network_risk"):
        _config(tmp_path, '[web]\nhost = "0.0.0.0"\n')
    risky = _config(tmp_path, '[web]\nhost = "0.0.0.0"\naccept_network_risk = true\n')
    assert risky.web.host == "0.0.0.0"
    assert _config(tmp_path, '[web]\nhost = "0.0.0.0"\nenabled = false\n').web.enabled is False
    for bad, key in (("port = 70000", "port"), ('host = "localhost"', "host"), ("colour = 1", "colour")):
        with pytest.raises(ConfigError, match=key):
            _config(tmp_path, f"[web]\n{bad}\n")


def test_web_open_starts_the_browser_and_never_fails(monkeypatch):
    import io
    import webbrowser

    from cloudp2p.client import cli

    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    err = io.StringIO()
    cli._open_browser("http://127.0.0.1:1/auth?ticket=t", err)
    assert opened == ["http://127.0.0.1:1/auth?ticket=t"] and err.getvalue() == ""
    monkeypatch.setattr(webbrowser, "open", lambda url: False)
    cli._open_browser("http://127.0.0.1:1/auth?ticket=t", err)
    assert "no browser found; open the link yourself" in err.getvalue()
    text = cli.format_result("web", {"url": "http://127.0.0.1:1/auth?ticket=t", "expires_in": 120.0})
    assert text.startswith("Open http://127.0.0.1:1/auth?ticket=t") and "once, within 120 s" in text
