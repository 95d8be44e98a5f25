"""The container format: the bytes hidden in a stego image, and the crypto that protects them.

Everything here works on a ``Carrier`` (read/write bytes at a byte offset of
the hidden stream), so the format can be tested on plain bytes; ``container.py``
puts it on images through the stego engine. The layout (all hidden bytes look
random: nothing readable, no text, no base64)::

    start  size   region
    0      60     header   salt(16) || (fields(44) XOR mask(salt))
    60     356    wrap     the content key and the signed rights, wrapped to the viewer
    416    36     counter  views used, encrypted under a key derived from the content key
    452    n      payload  AES-256-GCM(content key, codec byte || secret image)

Header fields (before masking, big-endian): magic b"CP2P", format version (1),
flags (0), reserved u16 (0), image_id (16), payload nonce (12), payload length
u32 (ciphertext with tag), CRC-32 of the 40 bytes before it. The mask is
SHA-512(b"cloudp2p/header-mask/v1\\0" || salt)[:44]: it is public (anyone can
unmask), it only keeps the hidden stream free of constant bytes.

Wrap: ephemeral X25519 public key (32) || nonce (12) || AES-256-GCM(kek, content
key (32) || rights length u16 || signed rights || zero padding to 262 bytes),
with kek = HKDF-SHA256(X25519(eph, viewer), info = b"cloudp2p/wrap/v1\\0" ||
eph_pub || viewer_pub || image_id) and AAD b"cloudp2p/wrap/v1\\0" || image_id.

An *enforced* copy (issue 17) wraps share A of the content key instead of the key
itself (``split_key``: content key = share A XOR share B; share B stays with the
cloud) and sets the top bit of the rights length (``ENFORCED_FLAG``): the wrap
alone no longer opens the payload.

Counter: nonce (12) || AES-256-GCM(counter key, views_used u32 || rights
version u32), counter key = HKDF-SHA256(wrapped key, info =
b"cloudp2p/views-used/v1\\0" || image_id), AAD = that info || viewer_id.

The owner's copy (as sealed by the server) has random bytes in the wrap and
counter regions: it opens only with the content key.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from typing import Protocol

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cloudp2p.encryption import keywrap
from cloudp2p.encryption.errors import (
    CorruptContainerError,
    KeyFormatError,
    NotAContainerError,
    UnsupportedVersionError,
    WrongKeyError,
)
from cloudp2p.encryption.rights import MAX_RIGHTS_SIZE, RightsError, SignedRights, user_id_text

FORMAT_VERSION = 1
MAGIC = b"CP2P"
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
IMAGE_ID_SIZE = 16
SALT_SIZE = 16

_FIELDS = struct.Struct(">4sBBH16s12sI")  # magic, version, flags, reserved, image_id, nonce, payload_len
_CRC = struct.Struct(">I")
HEADER_FIELDS_SIZE = _FIELDS.size + _CRC.size  # 44
HEADER_SIZE = SALT_SIZE + HEADER_FIELDS_SIZE  # 60
_MASK_CONTEXT = b"cloudp2p/header-mask/v1\x00"

_WRAP_CONTEXT = b"cloudp2p/wrap/v1\x00"
_WRAP_PLAIN = KEY_SIZE + 2 + MAX_RIGHTS_SIZE
WRAP_SIZE = KEY_SIZE + NONCE_SIZE + _WRAP_PLAIN + TAG_SIZE  # 356

ENFORCED_FLAG = 0x8000  # in the wrap's rights-length field: the wrapped key is share A of a split key

_COUNTER_CONTEXT = b"cloudp2p/views-used/v1\x00"
_COUNTER_PLAIN = struct.Struct(">II")
COUNTER_SIZE = NONCE_SIZE + _COUNTER_PLAIN.size + TAG_SIZE  # 36

WRAP_START = HEADER_SIZE
COUNTER_START = WRAP_START + WRAP_SIZE
PAYLOAD_START = COUNTER_START + COUNTER_SIZE  # 452
OVERHEAD = PAYLOAD_START + TAG_SIZE  # bytes hidden besides the (compressed) secret itself

_PAYLOAD_CONTEXT = b"cloudp2p/payload/v1\x00"
CODEC_STORED = 0
CODEC_ZLIB = 1
MAX_PAYLOAD = 2**32 - 1
_PROBE = 64 * 1024


class Carrier(Protocol):
    """Bytes hidden somewhere, addressable by byte offset; regions can be rewritten in place."""

    @property
    def capacity(self) -> int: ...  # bytes

    def read(self, start: int, n: int) -> bytes: ...

    def write(self, start: int, data: bytes) -> None: ...


@attrs.define
class BytesCarrier:
    """A carrier over a ``bytearray`` (tests, and the format's own reference)."""

    buffer: bytearray

    @property
    def capacity(self) -> int:
        return len(self.buffer)

    def read(self, start: int, n: int) -> bytes:
        if start < 0 or n < 0 or start + n > len(self.buffer):
            raise NotAContainerError(f"needs {start + n} hidden bytes, the image holds {len(self.buffer)}")
        return bytes(self.buffer[start : start + n])

    def write(self, start: int, data: bytes) -> None:
        if start + len(data) > len(self.buffer):
            raise ValueError("write past the end of the carrier")
        self.buffer[start : start + len(data)] = data


@attrs.frozen
class Header:
    image_id: bytes
    payload_nonce: bytes
    payload_len: int
    version: int = FORMAT_VERSION
    flags: int = 0

    def fields(self) -> bytes:
        return _FIELDS.pack(
            MAGIC, self.version, self.flags, 0, self.image_id, self.payload_nonce, self.payload_len
        )

    def encode(self, salt: bytes | None = None) -> bytes:
        salt = os.urandom(SALT_SIZE) if salt is None else salt
        plain = self.fields()
        plain += _CRC.pack(zlib.crc32(plain))
        return salt + _xor(plain, _mask(salt))

    @classmethod
    def decode(cls, raw: bytes) -> Header:
        if len(raw) != HEADER_SIZE:
            raise NotAContainerError("the hidden header is truncated")
        salt, masked = raw[:SALT_SIZE], raw[SALT_SIZE:]
        plain = _xor(masked, _mask(salt))
        magic, version, flags, _reserved, image_id, nonce, payload_len = _FIELDS.unpack_from(plain)
        if magic != MAGIC:
            raise NotAContainerError("no cloudp2p header found")
        (crc,) = _CRC.unpack_from(plain, _FIELDS.size)
        if crc != zlib.crc32(plain[: _FIELDS.size]):
            raise CorruptContainerError("the hidden header fails its checksum")
        if version != FORMAT_VERSION:
            raise UnsupportedVersionError(
                f"format version {version}; this cloudp2p reads version {FORMAT_VERSION}"
            )
        if flags != 0:
            raise UnsupportedVersionError(f"unknown header flags {flags:#x}")
        if payload_len < TAG_SIZE + 1:
            raise CorruptContainerError(f"payload length {payload_len} is too small")
        return cls(
            image_id=image_id, payload_nonce=nonce, payload_len=payload_len, version=version, flags=flags
        )

    @property
    def total_size(self) -> int:
        return PAYLOAD_START + self.payload_len


def _mask(salt: bytes) -> bytes:
    return hashlib.sha512(_MASK_CONTEXT + salt).digest()[:HEADER_FIELDS_SIZE]


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=info).derive(ikm)


def _check_content_key(content_key: bytes) -> bytes:
    if not isinstance(content_key, bytes | bytearray) or len(content_key) != KEY_SIZE:
        raise KeyFormatError(f"content key: expected {KEY_SIZE} bytes")
    return bytes(content_key)


# -- payload -----------------------------------------------------------------------------------------


def compress_secret(secret: bytes) -> bytes:
    """codec byte || body: zlib when it saves at least 1%, else the bytes as they are.

    Image files (PNG, JPEG) are already compressed; a quick probe of the first
    64 KiB skips the attempt for them. Either way what gets encrypted is
    compressed data, never text.
    """
    probe = secret[:_PROBE]
    if len(secret) > _PROBE and len(zlib.compress(probe, 1)) > len(probe) * 0.95:
        return bytes([CODEC_STORED]) + secret  # already compressed (JPEG, PNG): do not spend time on it
    packed = zlib.compress(secret, 6)
    if len(packed) < len(secret) * 0.99:
        return bytes([CODEC_ZLIB]) + packed
    return bytes([CODEC_STORED]) + secret


def decompress_secret(plain: bytes, *, limit: int) -> bytes:
    codec, body = plain[:1], plain[1:]
    if codec == bytes([CODEC_STORED]):
        return body
    if codec == bytes([CODEC_ZLIB]):
        d = zlib.decompressobj()
        try:
            out = d.decompress(body, limit)
        except zlib.error:
            raise CorruptContainerError("the hidden image does not decompress") from None
        if d.unconsumed_tail or not d.eof:
            raise CorruptContainerError(f"the hidden image is larger than {limit} bytes or truncated")
        return out
    raise CorruptContainerError("unknown payload codec")


def payload_aad(header: Header) -> bytes:
    return _PAYLOAD_CONTEXT + header.fields()


def encrypt_payload(content_key: bytes, compressed: bytes, image_id: bytes) -> tuple[Header, bytes]:
    if len(compressed) + TAG_SIZE > MAX_PAYLOAD:
        raise ValueError("secret image too large")
    header = Header(
        image_id=image_id, payload_nonce=os.urandom(NONCE_SIZE), payload_len=len(compressed) + TAG_SIZE
    )
    ciphertext = AESGCM(content_key).encrypt(header.payload_nonce, compressed, payload_aad(header))
    return header, ciphertext


def decrypt_payload(content_key: bytes, header: Header, ciphertext: bytes) -> bytes:
    """The compressed plaintext, or ``WrongKeyError`` / ``CorruptContainerError``."""
    try:
        return AESGCM(_check_content_key(content_key)).decrypt(
            header.payload_nonce, ciphertext, payload_aad(header)
        )
    except InvalidTag:
        raise WrongKeyError(
            "the content key does not open this image's payload (wrong key or damaged image)"
        ) from None


def payload_hash(ciphertext: bytes) -> bytes:
    return hashlib.sha256(ciphertext).digest()


# -- wrap: content key + signed rights for one viewer ----------------------------------------------------


def wrap(
    content_key: bytes,
    signed: SignedRights,
    viewer_x25519_pub: bytes,
    image_id: bytes,
    *,
    enforced: bool = False,
) -> bytes:
    """The wrap region (``WRAP_SIZE`` bytes) for the viewer's X25519 public key (ECIES-style).

    ``enforced``: ``content_key`` is share A of a split key (``split_key``), and the wrap says so.
    """
    content_key = _check_content_key(content_key)
    blob = signed.to_bytes()
    length = len(blob) | (ENFORCED_FLAG if enforced else 0)
    plain = content_key + struct.pack(">H", length) + blob
    plain += bytes(_WRAP_PLAIN - len(plain))
    out = keywrap.seal(plain, viewer_x25519_pub, _WRAP_CONTEXT, image_id, who="viewer")
    assert len(out) == WRAP_SIZE
    return out


@attrs.frozen(repr=False)
class Unwrapped:
    """What a wrap holds: the key (the content key, or share A when ``enforced``) and the rights."""

    key: bytes
    signed: SignedRights  # not yet verified
    enforced: bool


def open_wrap(region: bytes, viewer_x25519: X25519PrivateKey, image_id: bytes) -> Unwrapped:
    """The wrap opened with the viewer's key, or ``WrongKeyError`` / ``CorruptContainerError``."""
    if len(region) != WRAP_SIZE:
        raise CorruptContainerError("the wrapped-key region is truncated")
    plain = keywrap.unseal(
        region, viewer_x25519, _WRAP_CONTEXT, image_id, refusal="no key in this image is wrapped for you"
    )
    key = plain[:KEY_SIZE]
    (length,) = struct.unpack_from(">H", plain, KEY_SIZE)
    enforced, n = bool(length & ENFORCED_FLAG), length & ~ENFORCED_FLAG
    blob = plain[KEY_SIZE + 2 : KEY_SIZE + 2 + n]
    if n > MAX_RIGHTS_SIZE or any(plain[KEY_SIZE + 2 + n :]):
        raise CorruptContainerError("the wrapped rights have a bad length")
    try:
        signed = SignedRights.from_bytes(blob)
    except RightsError as e:
        raise CorruptContainerError(f"the wrapped rights do not parse: {e.detail}") from None
    return Unwrapped(key, signed, enforced)


def unwrap(region: bytes, viewer_x25519: X25519PrivateKey, image_id: bytes) -> tuple[bytes, SignedRights]:
    """(wrapped key, signed rights, not yet verified) or ``WrongKeyError`` / ``CorruptContainerError``.

    The wrapped key is the content key of an offline-capable copy, share A of an enforced one.
    """
    opened = open_wrap(region, viewer_x25519, image_id)
    return opened.key, opened.signed


# -- split keys: enforced copies --------------------------------------------------------------------------


def split_key(content_key: bytes) -> tuple[bytes, bytes]:
    """Two shares of ``content_key``, (A, B) with A XOR B = key: each alone is uniformly random.

    XOR (2-of-2 secret sharing) rather than a KDF of both shares, because the content key
    exists already (the server made it at seal time) and each share must reveal nothing of it.
    """
    content_key = _check_content_key(content_key)
    share_a = os.urandom(KEY_SIZE)
    return share_a, _xor(share_a, content_key)


def join_key(share_a: bytes, share_b: bytes) -> bytes:
    """The content key from its two shares (``split_key``)."""
    return _xor(_check_content_key(share_a), _check_content_key(share_b))


# -- counter: views used -------------------------------------------------------------------------------


def _counter_key_aad(content_key: bytes, image_id: bytes, viewer_id: str) -> tuple[bytes, bytes]:
    info = _COUNTER_CONTEXT + image_id
    return _hkdf(_check_content_key(content_key), info), info + user_id_text(viewer_id).encode("utf-8")


def encode_counter(
    content_key: bytes, image_id: bytes, viewer_id: str, views_used: int, version: int
) -> bytes:
    key, aad = _counter_key_aad(content_key, image_id, viewer_id)
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, _COUNTER_PLAIN.pack(views_used, version), aad)


def decode_counter(region: bytes, content_key: bytes, image_id: bytes, viewer_id: str) -> tuple[int, int]:
    """(views used, rights version it was last written under) or ``CorruptContainerError``."""
    if len(region) != COUNTER_SIZE:
        raise CorruptContainerError("the views-used record is truncated")
    key, aad = _counter_key_aad(content_key, image_id, viewer_id)
    try:
        plain = AESGCM(key).decrypt(region[:NONCE_SIZE], region[NONCE_SIZE:], aad)
    except InvalidTag:
        raise CorruptContainerError("the views-used record was altered or damaged") from None
    used, version = _COUNTER_PLAIN.unpack(plain)
    return used, version


# -- whole container on a carrier ---------------------------------------------------------------------


def read_header(carrier: Carrier) -> Header:
    if carrier.capacity < HEADER_SIZE:
        raise NotAContainerError("the image is too small to hold a cloudp2p container")
    header = Header.decode(carrier.read(0, HEADER_SIZE))
    if header.total_size > carrier.capacity:
        raise CorruptContainerError(
            f"the header claims {header.total_size} hidden bytes, the image holds {carrier.capacity}"
        )
    return header


def read_payload(carrier: Carrier, header: Header) -> bytes:
    return carrier.read(PAYLOAD_START, header.payload_len)


def write_new(carrier: Carrier, header: Header, ciphertext: bytes) -> None:
    """A fresh owner's container: header, random wrap and counter regions, payload."""
    if header.total_size > carrier.capacity:
        raise ValueError("carrier too small")
    carrier.write(0, header.encode() + os.urandom(WRAP_SIZE + COUNTER_SIZE) + ciphertext)


def needed_bytes(compressed_len: int) -> int:
    """Hidden bytes a secret of ``compressed_len`` (codec byte included) needs."""
    return OVERHEAD + compressed_len
