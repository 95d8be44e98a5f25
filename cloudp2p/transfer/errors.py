"""Errors a transfer can end with. Each docstring is the message a user sees."""

from __future__ import annotations

from cloudp2p.errors import CloudP2PError


class TransferError(CloudP2PError):
    """The image transfer failed."""

    exit_code = 19  # as the client's TransferFailed


class TransferTimeout(TransferError):  # noqa: N818 (names read as events, like the project's own)
    """The other side of the image transfer stopped answering; try again when it is back."""


class TransferRefused(TransferError):  # noqa: N818 (names read as events, like the project's own)
    """The other side refused the image transfer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class FileTooLarge(TransferRefused):
    """The image is larger than the transfer size limit."""

    def __init__(self, message: str) -> None:
        super().__init__("too_large", message)


class TooManyTransfers(TransferRefused):
    """Too many transfers with this peer are already running; try again shortly."""

    def __init__(self, message: str) -> None:
        super().__init__("busy", message)


class IntegrityError(TransferError):
    """The received image does not match its announced SHA-256; nothing was kept."""


class TransferAborted(TransferError):  # noqa: N818 (names read as events, like the project's own)
    """The image transfer was stopped before it finished."""


class BadTransferMeta(TransferError):  # noqa: N818 (names read as events, like the project's own)
    """The transfer description (port, transfer id, size, sha256) is not valid."""


def refusal(code: str, message: str) -> TransferRefused:
    """The exception for a REFUSE the other side sent."""
    if code == "busy":
        return TooManyTransfers(message)
    if code == "too_large":
        return FileTooLarge(message)
    return TransferRefused(code, message)
