"""Errors the client daemon and the `cloudp2p` command show to the user.

As in ``cloudp2p.errors``, each class's docstring is the message and its
``exit_code`` the code `cloudp2p` exits with (10 and up; the shared errors use
2 to 7); the detail given when raising says what exactly was wrong.
"""

from __future__ import annotations

from cloudp2p.errors import CloudP2PError, UsageError


class ClientError(CloudP2PError):
    """The client could not do that."""

    exit_code = 10


class InvalidArgument(UsageError):  # noqa: N818
    """A value given to the command is not valid."""


class HomeError(ClientError):  # noqa: N818
    """The client home directory is not usable."""

    exit_code = 11


class NotRegistered(ClientError):  # noqa: N818
    """No account lives in this home yet; run `cloudp2p register USERNAME` first."""

    exit_code = 12


class AlreadyRegistered(ClientError):  # noqa: N818
    """This home already holds an account; use another `--home` for another user."""

    exit_code = 13


class NotSignedIn(ClientError):  # noqa: N818
    """You are not signed in; run `cloudp2p login` first."""

    exit_code = 14


class UnknownImage(ClientError):  # noqa: N818
    """No such image; `cloudp2p images` lists yours and `cloudp2p users` the ones offered."""

    exit_code = 15


class UnknownRequest(ClientError):  # noqa: N818
    """No such request; `cloudp2p inbox` lists them."""

    exit_code = 16


class UnknownUser(ClientError):  # noqa: N818
    """No such user in the directory."""

    exit_code = 17


class UserOffline(ClientError):  # noqa: N818
    """That user is not online now; try again when they are (`cloudp2p users`)."""

    exit_code = 18


class TransferFailed(ClientError):  # noqa: N818
    """The transfer did not complete; run the same command again to resume it."""

    exit_code = 19


class AccessDenied(ClientError):  # noqa: N818
    """This copy cannot be opened here."""

    exit_code = 20


class ControlProtocolError(ClientError):  # noqa: N818
    """The command and the daemon did not understand each other."""

    exit_code = 21


class PeerMessageError(ClientError):  # noqa: N818
    """A peer message was not valid."""

    exit_code = 22


class KeyChanged(ClientError):  # noqa: N818
    """This user's public keys are not the ones this client saw before: nothing was sent or accepted.

    If the user confirms (in person, by phone) that they made new keys, run `cloudp2p trust USER`;
    otherwise the directory may be handing out someone else's keys.
    """

    exit_code = 28
