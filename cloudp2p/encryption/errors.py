"""Errors the encryption layer raises on hostile or damaged input.

Every reader in ``cloudp2p.encryption`` turns anything it cannot accept (a
truncated file, a flipped bit, a wrong key, forged rights) into one of these
classes; no other exception escapes a reader. As in ``cloudp2p.errors``, each
class's docstring is the message the user sees.
"""

from __future__ import annotations

from cloudp2p.errors import CloudP2PError


class EncryptionError(CloudP2PError):
    """The protected image cannot be used."""

    exit_code = 20  # as the client's AccessDenied: not shared with you, damaged, forged rights


class KeyFormatError(EncryptionError):
    """A key is not valid (it must be a raw 32-byte X25519 or Ed25519 key, base64 with padding)."""


class ContainerError(EncryptionError):
    """The image does not hold a usable cloudp2p container."""


class NotAContainerError(ContainerError):
    """This image does not hold a cloudp2p hidden image (or it was re-encoded lossily)."""


class CorruptContainerError(ContainerError):
    """The hidden container is damaged or was tampered with; it will not be opened."""


class UnsupportedVersionError(ContainerError):
    """The hidden container was written by a newer cloudp2p; upgrade to open it."""


class WrongKeyError(EncryptionError):
    """This image was not shared with you: your keys cannot open it."""


class ShareRequiredError(EncryptionError):
    """This copy is enforced by the cloud: each view needs the key share the cloud releases."""


class RightsError(EncryptionError):
    """The access rights carried by this image are not valid; the image will not be shown."""


class RightsForgedError(RightsError):
    """The access rights were not signed by the image's owner (edited or forged); the image is not shown."""


class RightsMismatchError(RightsError):
    """The access rights belong to another image, viewer or owner; the image will not be shown."""


class RightsOutdatedError(RightsError):
    """These access rights are older than ones already seen for this image; they were not applied."""


class LedgerError(EncryptionError):
    """The local view ledger cannot be read or written; it was left as it was."""
