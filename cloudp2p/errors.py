"""Errors a user can see.

Each class's docstring is the message shown to the user, and its ``exit_code``
class attribute the code a command-line tool exits with, so that scripts can
rely on it (a subclass inherits its parent's code unless it sets its own;
docs/client.md lists them all). ``exit_code_for`` and ``error_json`` are the one
mapping from an exception to what a user or a script sees, for every front end.
Raise them with extra detail as the first argument:
``raise ConfigError("server.toml: [cluster] heartbeat: must be a number")``.
"""

from __future__ import annotations

import re
from typing import Any


class CloudP2PError(Exception):
    """Something went wrong."""

    exit_code = 1

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def summary(self) -> str:
        return (self.__doc__ or "").strip().splitlines()[0]

    def __str__(self) -> str:
        return f"{self.summary} {self.detail}".strip() if self.detail else self.summary


class UsageError(CloudP2PError):
    """The command line is not valid."""

    exit_code = 2


class ConfigError(CloudP2PError):
    """The configuration is not valid; fix the file and start again."""

    exit_code = 3


class CloudUnreachable(CloudP2PError):
    """No server of the cloud answered in time; check that the cloud is running and try again."""

    exit_code = 4


class RequestFailed(CloudP2PError):
    """The cloud refused the request."""

    exit_code = 5

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RateLimited(RequestFailed):
    """The cloud is limiting your requests for now; wait a little and try again."""

    exit_code = 8


def request_failed(code: str, message: str) -> RequestFailed:
    """The error for a refusal by the cloud: ``RateLimited`` for ``rate_limited``, else ``RequestFailed``."""
    return RateLimited(code, message) if code == "rate_limited" else RequestFailed(code, message)


class DaemonNotRunning(CloudP2PError):
    """The cloudp2p client daemon is not running; start it with `twistd cloudp2p-client`."""

    exit_code = 6


class InvalidImage(CloudP2PError):
    """The file is not an image cloudp2p can read."""

    exit_code = 7


class ServerIdentityError(CloudP2PError):
    """A cloud server could not prove who it is; nothing was sent to it."""

    exit_code = 23


class ServerUntrusted(ServerIdentityError):
    """A cloud server's certificate is not signed by the cloud CA pinned here (`cloudp2p init --ca`)."""

    exit_code = 24


class ServerCertificateExpired(ServerIdentityError):
    """A cloud server's certificate has expired or is not valid yet; its operator must renew it."""

    exit_code = 25


class ServerNameMismatch(ServerIdentityError):
    """A cloud server's certificate names another server; check the servers in client.toml."""

    exit_code = 26


class SecureHandshakeFailed(CloudP2PError):
    """The secure handshake with a cloud server failed."""

    exit_code = 27


def exit_code_for(error: BaseException) -> int:
    """The exit code for ``error``: its class's ``exit_code``; 1 for anything that is not ours."""
    return error.exit_code if isinstance(error, CloudP2PError) else 1


def error_code(error: BaseException) -> str:
    """A stable snake_case code scripts can test: the cloud's own code, else the class name."""
    if isinstance(error, RequestFailed):
        return error.code
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()


def error_json(error: BaseException) -> dict[str, Any]:
    """What every front end (control socket, `cloudp2p --json`, web) reports for ``error``."""
    return {
        "type": type(error).__name__,
        "code": error_code(error),
        "message": str(error),
        "exit_code": exit_code_for(error),
    }
