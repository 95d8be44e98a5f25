"""DTLS 1.2 record framing (RFC 6347, section 4.1), and nothing more.

OpenSSL protects and checks the records; this module only cuts a datagram
into records and looks at their clear headers, because:

- a memory BIO is a byte stream: OpenSSL's DTLS reader takes one read of up to
  ~18 KB as a "datagram", so a datagram carrying several full-size records must
  be fed one record at a time or the ones after the first are lost;
- a server decides from the header alone, before it allocates anything, whether
  a datagram from an unknown source is a ClientHello worth a cookie.

Record header (13 bytes): content type (1), version (2), epoch (2), sequence
number (6), length (2).
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("!BHH6sH")
HEADER_SIZE = HEADER.size  # 13

CHANGE_CIPHER_SPEC = 20
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23
CONTENT_TYPES = frozenset({CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA})

DTLS_1_0 = 0xFEFF
DTLS_1_2 = 0xFEFD
VERSIONS = frozenset({DTLS_1_0, DTLS_1_2})

CLIENT_HELLO = 1
MAX_RECORD = 16384 + 2048  # plaintext limit plus the largest expansion RFC 6347 allows


class RecordError(ValueError):
    """A datagram that is not a sequence of DTLS records."""


def split(datagram: bytes) -> list[bytes]:
    """The records of one datagram, each with its header; ``RecordError`` if any is cut short or odd."""
    records = []
    view = memoryview(datagram)
    pos, end = 0, len(datagram)
    while pos < end:
        if end - pos < HEADER_SIZE:
            raise RecordError(f"{end - pos} bytes left, shorter than a record header")
        kind, version, _epoch, _seq, length = HEADER.unpack_from(view, pos)
        if kind not in CONTENT_TYPES:
            raise RecordError(f"unknown content type {kind}")
        if version not in VERSIONS:
            raise RecordError(f"not a DTLS record (version {version:#06x})")
        if length > MAX_RECORD or pos + HEADER_SIZE + length > end:
            raise RecordError(f"record of {length} bytes overruns the datagram")
        records.append(bytes(view[pos : pos + HEADER_SIZE + length]))
        pos += HEADER_SIZE + length
    if not records:
        raise RecordError("empty datagram")
    return records


def content_type(record: bytes) -> int:
    return record[0]


def epoch(record: bytes) -> int:
    return int.from_bytes(record[3:5], "big")


def is_client_hello(record: bytes) -> bool:
    """An unprotected (epoch 0) handshake record whose first message is a ClientHello."""
    return (
        len(record) > HEADER_SIZE
        and record[0] == HANDSHAKE
        and epoch(record) == 0
        and record[HEADER_SIZE] == CLIENT_HELLO
    )


def lost_association_hint() -> bytes:
    """What a server sends back to protected records it has no association for.

    An unprotected warning ``close_notify`` alert (epoch 0, 15 bytes): smaller than
    any protected record, so it never amplifies. It tells a client whose server has
    restarted to handshake again at once instead of waiting for its keepalive.
    Anyone can forge it; a client therefore only starts a *new* handshake (rate
    limited) and keeps using the old association until the new one is up.
    """
    return HEADER.pack(ALERT, DTLS_1_2, 0, bytes(6), 2) + bytes((1, 0))


def is_lost_association_hint(datagram: bytes) -> bool:
    return (
        len(datagram) == HEADER_SIZE + 2
        and datagram[0] == ALERT
        and epoch(datagram) == 0
        and datagram[HEADER_SIZE:] == bytes((1, 0))
    )
