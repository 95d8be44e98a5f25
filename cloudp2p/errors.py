"""Errors a user can see.

Each class's docstring is the message shown to the user; the exit code a
command-line tool returns for it lives in one table, ``EXIT_CODES``, so that
scripts can rely on it. Raise them with extra detail as the first argument:
``raise ConfigError("server.toml: [cluster] heartbeat: must be a number")``.
"""


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


class ConfigError(CloudP2PError):
    """The configuration is not valid; fix the file and start again."""


class CloudUnreachable(CloudP2PError):
    """No server of the cloud answered in time; check that the cloud is running and try again."""


class RequestFailed(CloudP2PError):
    """The cloud refused the request."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RateLimited(RequestFailed):
    """The cloud is limiting your requests for now; wait a little and try again."""


def request_failed(code: str, message: str) -> RequestFailed:
    """The error for a refusal by the cloud: ``RateLimited`` for ``rate_limited``, else ``RequestFailed``."""
    return RateLimited(code, message) if code == "rate_limited" else RequestFailed(code, message)


class DaemonNotRunning(CloudP2PError):
    """The cloudp2p client daemon is not running; start it with `twistd cloudp2p-client`."""


class InvalidImage(CloudP2PError):
    """The file is not an image cloudp2p can read."""


class ServerIdentityError(CloudP2PError):
    """A cloud server could not prove who it is; nothing was sent to it."""


class ServerUntrusted(ServerIdentityError):
    """A cloud server's certificate is not signed by the cloud CA pinned here (`cloudp2p init --ca`)."""


class ServerCertificateExpired(ServerIdentityError):
    """A cloud server's certificate has expired or is not valid yet; its operator must renew it."""


class ServerNameMismatch(ServerIdentityError):
    """A cloud server's certificate names another server; check the servers in client.toml."""


class SecureHandshakeFailed(CloudP2PError):
    """The secure handshake with a cloud server failed."""


# One place that maps errors to process exit codes (0 is success, 2 is argparse's own usage code).
EXIT_CODES: dict[type[CloudP2PError], int] = {
    UsageError: 2,
    ConfigError: 3,
    CloudUnreachable: 4,
    RequestFailed: 5,
    DaemonNotRunning: 6,
    InvalidImage: 7,
    RateLimited: 8,
    ServerIdentityError: 23,
    ServerUntrusted: 24,
    ServerCertificateExpired: 25,
    ServerNameMismatch: 26,
    SecureHandshakeFailed: 27,
}


def exit_code_for(error: BaseException) -> int:
    """The exit code for ``error``: the most specific entry of ``EXIT_CODES``, else 1."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1
