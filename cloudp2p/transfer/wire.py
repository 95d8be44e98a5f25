"""The transfer datagram format.

Every datagram starts with the same 24-byte header, network byte order::

    offset size field
    0      4    crc32   CRC-32 (zlib) of every byte after this field
    4      2    magic   b"CT"
    6      1    version 1
    7      1    type    DATA=1 ACK=2 REQUEST=3 ACCEPT=4 REFUSE=5 CLOSE=6
    8      16   transfer id (the 32 hex digits of ``transfer_id``, as raw bytes)

then, by type:

- ``DATA`` (sender -> receiver): ``seq`` (int32, chunk index, signed so that a
  negative index is representable and rejected), ``length`` (uint16, payload
  bytes), then the raw payload (never base64). Chunk ``seq`` covers bytes
  ``[seq * chunk_size, seq * chunk_size + length)`` of the file.
- ``ACK`` (receiver -> sender): ``cum`` (uint32, every chunk below it is held),
  ``high`` (uint32, one past the highest chunk this ack describes), ``window``
  (uint32, chunks the receiver's socket buffer can absorb), ``echo`` (int32,
  the chunk whose arrival triggered this ack, -1 if none), ``count`` (uint16),
  then ``count`` pairs ``(start, end)`` (uint32 each) of *missing* chunk ranges
  inside ``[cum, high)``: a selective acknowledgement.
- ``REQUEST``, ``ACCEPT``, ``REFUSE``, ``CLOSE``: a UTF-8 JSON object (control
  and metadata only).

A datagram whose CRC, magic, version, type or length does not check out is a
``WireError``: callers count it and drop it. The CRC catches corruption and
truncation; the transfer id and the peer address catch foreign datagrams.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

MAGIC = b"CT"
VERSION = 1

DATA = 1
ACK = 2
REQUEST = 3
ACCEPT = 4
REFUSE = 5
CLOSE = 6
TYPE_NAMES = {
    DATA: "DATA",
    ACK: "ACK",
    REQUEST: "REQUEST",
    ACCEPT: "ACCEPT",
    REFUSE: "REFUSE",
    CLOSE: "CLOSE",
}

HEADER = struct.Struct("!I2sBB16s")
DATA_FIELDS = struct.Struct("!iH")
DATA_HEADER = struct.Struct("!I2sBB16siH")
ACK_FIELDS = struct.Struct("!IIIiH")
RANGE = struct.Struct("!II")

HEADER_SIZE = HEADER.size  # 24
DATA_HEADER_SIZE = DATA_HEADER.size  # 30
ACK_HEADER_SIZE = HEADER.size + ACK_FIELDS.size
MAX_CHUNK_SIZE = 65000  # fits uint16 and one UDP datagram with the header
MIN_CHUNK_SIZE = 64
MAX_ACK_RANGES = 120  # keeps an ACK under 1,100 bytes, safe on any path
MAX_CONTROL_SIZE = 60000


class WireError(ValueError):
    """A datagram that is not a valid transfer datagram."""


class ChecksumError(WireError):
    """A datagram whose CRC does not match: corrupted or truncated on the way."""


def tid_to_bytes(transfer_id: str) -> bytes:
    """``"0123...ef"`` (32 hex digits) -> 16 bytes; ``WireError`` if it is not that."""
    if not isinstance(transfer_id, str) or len(transfer_id) != 32:
        raise WireError(f"transfer id must be 32 hex digits, got {transfer_id!r}")
    try:
        return bytes.fromhex(transfer_id)
    except ValueError:
        raise WireError(f"transfer id must be 32 hex digits, got {transfer_id!r}") from None


def _seal(body: bytes) -> bytes:
    return struct.pack("!I", zlib.crc32(body)) + body


def _prefix(kind: int, tid: bytes) -> bytes:
    return MAGIC + bytes((VERSION, kind)) + tid


class DataEncoder:
    """Builds DATA datagrams for one transfer with as little per-chunk work as possible.

    The CRC of the constant part of the header is computed once; each chunk
    then costs one ``struct.pack``, two ``zlib.crc32`` calls and one join.
    """

    def __init__(self, tid: bytes) -> None:
        self._prefix = _prefix(DATA, tid)
        self._crc_prefix = zlib.crc32(self._prefix)

    def encode(self, seq: int, payload: bytes | memoryview) -> bytes:
        return b"".join(self.encode_parts(seq, payload))

    def encode_parts(self, seq: int, payload: bytes | memoryview) -> tuple[bytes, bytes | memoryview]:
        """``(header, payload)``: the datagram in two pieces, for a scatter-gather ``sendmsg``."""
        fields = DATA_FIELDS.pack(seq, len(payload))
        crc = zlib.crc32(payload, zlib.crc32(fields, self._crc_prefix))
        return b"".join((crc.to_bytes(4, "big"), self._prefix, fields)), payload


def encode_data(tid: bytes, seq: int, payload: bytes) -> bytes:
    return DataEncoder(tid).encode(seq, payload)


def encode_ack(
    tid: bytes, cum: int, high: int, window: int, echo: int, missing: list[tuple[int, int]]
) -> bytes:
    if len(missing) > MAX_ACK_RANGES:
        raise ValueError("too many ranges in one ack")
    parts = [_prefix(ACK, tid), ACK_FIELDS.pack(cum, high, window, echo, len(missing))]
    parts.extend(RANGE.pack(a, b) for a, b in missing)
    return _seal(b"".join(parts))


def encode_control(kind: int, tid: bytes, body: dict[str, Any]) -> bytes:
    if kind not in (REQUEST, ACCEPT, REFUSE, CLOSE):
        raise ValueError(f"not a control type: {kind}")
    payload = json.dumps(body, separators=(",", ":")).encode()
    if len(payload) > MAX_CONTROL_SIZE:
        raise ValueError("control message too large")
    return _seal(_prefix(kind, tid) + payload)


def parse_header(datagram: bytes) -> tuple[int, bytes]:
    """Check the CRC, magic and version; return ``(type, transfer id bytes)``."""
    if len(datagram) < HEADER_SIZE:
        raise WireError(f"datagram of {len(datagram)} bytes is shorter than the header")
    crc, magic, version, kind, tid = HEADER.unpack_from(datagram)
    if magic != MAGIC:
        raise WireError("bad magic")
    if version != VERSION:
        raise WireError(f"unsupported version {version}")
    if zlib.crc32(memoryview(datagram)[4:]) != crc:
        raise ChecksumError("checksum mismatch (corrupted or truncated)")
    if kind not in TYPE_NAMES:
        raise WireError(f"unknown type {kind}")
    return kind, tid


def parse_data(datagram: bytes) -> tuple[int, memoryview]:
    """``(seq, payload)`` of a DATA datagram already checked by ``parse_header``."""
    if len(datagram) < DATA_HEADER_SIZE:
        raise WireError("DATA datagram shorter than its header")
    seq, length = DATA_FIELDS.unpack_from(datagram, HEADER_SIZE)
    if length != len(datagram) - DATA_HEADER_SIZE:
        raise WireError(f"DATA length field {length} does not match the payload")
    if seq < 0:
        raise WireError(f"negative chunk index {seq}")
    return seq, memoryview(datagram)[DATA_HEADER_SIZE:]


def parse_data_datagram(datagram: bytes) -> tuple[bytes, int, memoryview]:
    """``(transfer id, seq, payload)`` of a DATA datagram: ``parse_header`` and ``parse_data`` in one
    step, for the receiver's hot path. Raises ``WireError`` for anything else."""
    if len(datagram) < DATA_HEADER_SIZE or datagram[7] != DATA:
        raise WireError("not a DATA datagram")
    crc, magic, version, _, tid, seq, length = DATA_HEADER.unpack_from(datagram)
    if magic != MAGIC or version != VERSION:
        raise WireError("bad magic or version")
    view = memoryview(datagram)
    if zlib.crc32(view[4:]) != crc:
        raise ChecksumError("checksum mismatch (corrupted or truncated)")
    if length != len(datagram) - DATA_HEADER_SIZE:
        raise WireError(f"DATA length field {length} does not match the payload")
    if seq < 0:
        raise WireError(f"negative chunk index {seq}")
    return tid, seq, view[DATA_HEADER_SIZE:]


def parse_ack(datagram: bytes) -> tuple[int, int, int, int, list[tuple[int, int]]]:
    """``(cum, high, window, echo, missing ranges)``; ranges are checked: sorted, inside ``[cum, high)``."""
    if len(datagram) < ACK_HEADER_SIZE:
        raise WireError("ACK datagram shorter than its header")
    cum, high, window, echo, count = ACK_FIELDS.unpack_from(datagram, HEADER_SIZE)
    if count > MAX_ACK_RANGES or len(datagram) != ACK_HEADER_SIZE + count * RANGE.size:
        raise WireError("ACK range count does not match its length")
    if high < cum:
        raise WireError("ACK high below cum")
    missing = []
    pos = cum
    for i in range(count):
        a, b = RANGE.unpack_from(datagram, ACK_HEADER_SIZE + i * RANGE.size)
        if not pos <= a < b <= high:
            raise WireError("ACK ranges out of order or out of bounds")
        missing.append((a, b))
        pos = b
    return cum, high, window, echo, missing


def parse_control(datagram: bytes) -> dict[str, Any]:
    try:
        body = json.loads(bytes(memoryview(datagram)[HEADER_SIZE:]))
    except (UnicodeDecodeError, ValueError):
        raise WireError("control body is not JSON") from None
    except RecursionError:  # "[[[[..." nested deeper than the JSON parser recurses
        raise WireError("control body is nested too deeply") from None
    if not isinstance(body, dict):
        raise WireError("control body is not a JSON object")
    return body
