"""Errors the client daemon and the `cloudp2p` command show to the user.

As in ``cloudp2p.errors``, each class's docstring is the message; the detail
given when raising says what exactly was wrong. Their exit codes live in one
table, ``cloudp2p.client.cli.CLIENT_EXIT_CODES``, which extends the shared
``EXIT_CODES``.
"""

from __future__ import annotations

from cloudp2p.errors import CloudP2PError, UsageError


class ClientError(CloudP2PError):
    """The client could not do that."""


class InvalidArgument(UsageError):  # noqa: N818
    """A value given to the command is not valid."""


class HomeError(ClientError):  # noqa: N818
    """The client home directory is not usable."""


class NotRegistered(ClientError):  # noqa: N818
    """No account lives in this home yet; run `cloudp2p register USERNAME` first."""


class AlreadyRegistered(ClientError):  # noqa: N818
    """This home already holds an account; use another `--home` for another user."""


class NotSignedIn(ClientError):  # noqa: N818
    """You are not signed in; run `cloudp2p login` first."""


class UnknownImage(ClientError):  # noqa: N818
    """No such image; `cloudp2p images` lists yours and `cloudp2p users` the ones offered."""


class UnknownRequest(ClientError):  # noqa: N818
    """No such request; `cloudp2p inbox` lists them."""


class UnknownUser(ClientError):  # noqa: N818
    """No such user in the directory."""


class UserOffline(ClientError):  # noqa: N818
    """That user is not online now; try again when they are (`cloudp2p users`)."""


class TransferFailed(ClientError):  # noqa: N818
    """The transfer did not complete; run the same command again to resume it."""


class AccessDenied(ClientError):  # noqa: N818
    """This copy cannot be opened here."""


class ControlProtocolError(ClientError):  # noqa: N818
    """The command and the daemon did not understand each other."""


class PeerMessageError(ClientError):  # noqa: N818
    """A peer message was not valid."""
