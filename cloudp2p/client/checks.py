"""The checks of a command's arguments, as the daemon applies them to a control request's ``args``.

The control socket is an API as much as the command line is: whatever a front end
sent, a value that is missing, of the wrong type or out of range stops the command
with ``InvalidArgument`` (exit 2) before anything changes. Each check is a small
value (``Check``) that the command table (``cloudp2p.client.table``) names per
argument; no Twisted here, the `cloudp2p` command imports it too.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from cloudp2p.client.errors import InvalidArgument
from cloudp2p.directory.validate import is_username

MAX_VIEWS = 1000  # views one grant may give (the rights format's bound)

# (value, argument name) -> the checked value, or ``InvalidArgument``
Check = Callable[[Any, str], Any]


def valid_username(value: Any) -> bool:
    """The directory's rule (3 to 32 of ``A-Za-z0-9_.-``, starting with a letter or digit): never ``..``."""
    return is_username(value)


def text(limit: int = 4096, *, optional: bool = False) -> Check:
    """A non-empty string of at most ``limit`` characters (None allowed if ``optional``)."""

    def check(value: Any, name: str) -> str | None:
        if value is None:
            if optional:
                return None
            raise InvalidArgument(f"({name} is missing)")
        if not isinstance(value, str) or not value or len(value) > limit:
            raise InvalidArgument(f"({name} must be a non-empty string of at most {limit} characters)")
        return value

    return check


def absolute_path(*, optional: bool = False) -> Check:
    """A path the daemon may read: absolute (the daemon's working directory is not the user's)."""
    as_text = text(optional=optional)

    def check(value: Any, name: str) -> str | None:
        path = as_text(value, name)
        if path is not None and not os.path.isabs(path):
            raise InvalidArgument(f"({path}: paths must be absolute)")
        return path

    return check


def user(value: Any, name: str) -> str:
    """A user name as the directory spells them."""
    checked = text(64)(value, name)
    if not valid_username(checked):
        raise InvalidArgument(f"({name} {checked!r} is not a user name)")
    return checked


def views(low: int = 1, *, optional: bool = False) -> Check:
    """A whole number of views from ``low`` to ``MAX_VIEWS``."""

    def check(value: Any, name: str) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_VIEWS:
            raise InvalidArgument(f"({name} must be a whole number from {low} to {MAX_VIEWS}, got {value!r})")
        return value

    return check


def wait(value: Any, name: str) -> float:
    """Seconds to wait, 0 to 86400 (absent: 0, do not wait)."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 86400:
        raise InvalidArgument(f"({name} must be a number of seconds from 0 to 86400, got {value!r})")
    return float(value)


def flag(value: Any, name: str) -> bool:
    """True or false (absent: false)."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidArgument(f"({name} must be true or false, got {value!r})")
    return value


# -- the same arguments as the command line reads them (argparse ``type=``: earlier, friendlier) -----


def parse_views(low: int) -> Callable[[str], int]:
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


def parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds, got {text}")
    return value


def parse_existing_file(text: str) -> str:
    """An absolute path to a readable file (the daemon reads it, from another working directory)."""
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: cannot read it")
    return path
