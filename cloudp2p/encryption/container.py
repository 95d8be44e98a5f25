"""The container API: seal an image into a cover, grant it to a viewer, view it, change rights.

Who calls what (all of it CPU-bound: run it in the stego pool or a thread,
never on the reactor thread):

* the server (``encrypt`` op): ``seal_job`` / ``seal`` -> ``Sealed`` (the PNG,
  the image id and the content key, which the server then forgets);
* the owner's client: ``open_own`` (see one's own image), ``grant`` (a copy
  for one viewer: wrapped key + signed rights), ``grant_enforced`` (a copy
  holding only share A of the key: share B goes to the cloud, which releases
  it once per view), ``sign_rights`` (a standalone signed rights update to
  send to a viewer);
* the viewer's client: ``peek`` (who is the owner? to look up their key),
  ``status`` (views left, without using one), ``open_for_view`` (use one view,
  get the image or, at zero, the cover), ``apply_rights`` (install an update).

Every function exists twice: on PNG bytes (the public API) and on a
``Carrier`` (``*_carrier``; the same logic over plain bytes, used by tests and
by anything that already holds the hidden stream). Every reader raises only
``cloudp2p.encryption.errors`` classes (and ``cloudp2p.errors.InvalidImage``
for PNG bytes that are not an image).

Image ids are canonical UUID strings (16 random bytes), as the directory expects.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import attrs
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloudp2p.encryption import format as fmt
from cloudp2p.encryption.errors import (
    ContainerError,
    CorruptContainerError,
    EncryptionError,
    KeyFormatError,
    LedgerError,
    NotAContainerError,
    RightsError,
    RightsMismatchError,
    RightsOutdatedError,
    ShareRequiredError,
    WrongKeyError,
)
from cloudp2p.encryption.ledger import Ledger, LedgerEntry
from cloudp2p.encryption.rights import Rights, SignedRights, user_id_text
from cloudp2p.errors import InvalidImage

# One public position key for every region of every container: regions are
# told apart by their ``start`` offset, which the engine guarantees never
# overlap under one key. Secrecy comes from the encryption, not from this key.
POSITION_KEY = b"cloudp2p/container/v1"
MAX_SECRET_SIZE = 64 * 1024 * 1024  # decompression limit for a hidden image (the largest upload)
DEFAULT_COMPRESS_LEVEL = 1  # PNG zlib level: 4-5x faster than 6 on photos for ~19% larger files


def image_id_text(raw: bytes) -> str:
    """16 bytes -> the canonical UUID form the directory uses (``123e4567-e89b-...``)."""
    return str(uuid.UUID(bytes=raw))


def image_id_bytes(text: Any) -> bytes:
    if isinstance(text, bytes) and len(text) == fmt.IMAGE_ID_SIZE:
        return text
    try:
        if not isinstance(text, str) or len(text) != 36:
            raise ValueError
        return uuid.UUID(text).bytes
    except ValueError:
        raise ContainerError(
            f"image id must be a UUID such as 123e4567-e89b-12d3-a456-426614174000, got {text!r:.80}"
        ) from None


# -- images <-> carriers ----------------------------------------------------------------------------------


class ImageCarrier:
    """The hidden stream of a cover array, at the container's key positions (stego engine)."""

    def __init__(self, array: np.ndarray, key: bytes = POSITION_KEY) -> None:
        from cloudp2p.stego import engine

        self._engine = engine
        self.array = array
        self.key = key
        self.capacity = engine.capacity_bits(array.shape) // 8

    def read(self, start: int, n: int) -> bytes:
        if start < 0 or n < 0 or start + n > self.capacity:
            raise NotAContainerError(f"needs {start + n} hidden bytes, the image holds {self.capacity}")
        try:
            return self._engine.extract(self.array, self.key, n, start=start)
        except self._engine.CapacityError:
            raise NotAContainerError(f"needs {start + n} hidden bytes, more than the image holds") from None

    def write(self, start: int, data: bytes) -> None:
        self.array = self._engine.embed(self.array, data, self.key, start=start)


def load_carrier(png: bytes) -> ImageCarrier:
    """PNG bytes -> carrier; ``InvalidImage`` if not an image, ``NotAContainerError`` if too small."""
    from cloudp2p.stego import imaging

    if not isinstance(png, bytes | bytearray | memoryview):
        raise InvalidImage("expected the image's bytes")
    return ImageCarrier(imaging.png_to_array(bytes(png)))


def save_carrier(
    carrier: ImageCarrier, compress_level: int = DEFAULT_COMPRESS_LEVEL, writer: str = "fast"
) -> bytes:
    from cloudp2p.stego import imaging

    return imaging.save_png(carrier.array, compress_level=compress_level, writer=writer)


# -- results ---------------------------------------------------------------------------------------------


@attrs.frozen(repr=False)
class Sealed:
    """What ``seal`` produces. ``content_key`` is secret: the server hands it to the owner and forgets it."""

    png: bytes
    image_id: str
    content_key: bytes
    payload_hash: bytes
    cover: str = ""  # how the cover was chosen (library name, scaled, supplied...)
    psnr: float | None = None  # of the result against the cover, dB

    def __repr__(self) -> str:
        return f"Sealed(image_id={self.image_id!r}, png=<{len(self.png)} bytes>, cover={self.cover!r})"


@attrs.frozen
class OwnImage:
    image: bytes  # the secret image file, as the owner sent it
    image_id: str
    payload_hash: bytes


@attrs.frozen
class Envelope:
    """What the viewer's key reveals before any check: use ``owner_id`` to look up the owner's key."""

    image_id: str
    owner_id: str
    viewer_id: str
    version: int
    views: int
    enforced: bool = False  # the copy holds share A only: each view needs share B from the cloud


@attrs.frozen
class ViewStatus:
    image_id: str
    rights: Rights  # the newest verified rights (from the image or the ledger)
    views_used: int  # max(image counter, ledger)
    views_left: int


@attrs.frozen(repr=False)
class ViewResult:
    """The outcome of one view.

    ``image`` is the secret image (bytes of the original file) or ``None`` when
    no view was left; then show ``cover_png``, the stego image itself, which
    looks like the cover. ``png`` is the container to store back in place of
    the old file (its views-used counter is updated); ``consumed`` says whether
    this call used a view.
    """

    image: bytes | None
    cover_png: bytes
    png: bytes
    status: ViewStatus
    consumed: bool

    @property
    def views_left(self) -> int:
        return self.status.views_left

    def __repr__(self) -> str:
        shown = "image" if self.image is not None else "cover"
        return f"ViewResult({shown}, views_left={self.views_left}, consumed={self.consumed})"


# -- server side: seal -----------------------------------------------------------------------------------


def prepare_secret(secret: bytes) -> bytes:
    """Check that ``secret`` is an image (``InvalidImage`` if not) and compress it for hiding."""
    from cloudp2p.stego import imaging

    if not isinstance(secret, bytes | bytearray) or not secret:
        raise InvalidImage("the image to hide is empty")
    imaging.load_image(bytes(secret), draft=True)  # a check only: JPEGs at 1/8 scale, 2-3x faster
    return fmt.compress_secret(bytes(secret))


def needed_bits(compressed: bytes) -> int:
    return fmt.needed_bytes(len(compressed)) * 8


def seal_carrier(carrier: fmt.Carrier, compressed: bytes, *, image_id: bytes | None = None) -> Sealed:
    """Write a fresh owner's container of ``compressed`` (from ``compress_secret``) into ``carrier``."""
    image_id = uuid.uuid4().bytes if image_id is None else image_id_bytes(image_id)  # 122 random bits
    content_key = os.urandom(fmt.KEY_SIZE)
    header, ciphertext = fmt.encrypt_payload(content_key, compressed, image_id)
    if header.total_size > carrier.capacity:
        raise ContainerError(
            f"the cover holds {carrier.capacity} hidden bytes, {header.total_size} are needed"
        )
    fmt.write_new(carrier, header, ciphertext)
    return Sealed(
        png=b"",
        image_id=image_id_text(image_id),
        content_key=content_key,
        payload_hash=fmt.payload_hash(ciphertext),
    )


def seal(
    secret: bytes,
    cover: np.ndarray,
    *,
    image_id: str | None = None,
    compress_level: int = DEFAULT_COMPRESS_LEVEL,
    cover_description: str = "",
) -> Sealed:
    """Hide ``secret`` (an image file's bytes) in ``cover`` (uint8 H x W x C); a fresh content key.

    Raises ``InvalidImage`` if ``secret`` is not an image, the stego engine's
    ``CapacityError`` if the cover is too small.
    """
    return _seal_prepared(prepare_secret(secret), cover, image_id, compress_level, cover_description)


def _seal_prepared(
    compressed: bytes,
    cover: np.ndarray,
    image_id: str | None,
    compress_level: int,
    cover_description: str,
    writer: str = "fast",
) -> Sealed:
    from cloudp2p.stego import capacity, imaging

    need = needed_bits(compressed)
    if need > capacity.capacity_bits(cover.shape):
        raise capacity.too_small(need // 8, cover.shape)  # says how large a cover is needed
    carrier = ImageCarrier(cover)
    sealed = seal_carrier(carrier, compressed, image_id=image_id)
    png = imaging.save_png(carrier.array, compress_level=compress_level, writer=writer)
    return attrs.evolve(sealed, png=png, cover=cover_description, psnr=lsb_psnr(cover, carrier.array))


def lsb_psnr(cover: np.ndarray, stego: np.ndarray) -> float:
    """PSNR (dB) of ``stego`` against ``cover`` when every sample differs by at most 1 (LSB matching).

    Then the MSE is the fraction of changed samples: one comparison instead of
    float arithmetic over the whole image. Falls back to the general formula
    if a difference is larger.
    """
    from cloudp2p.stego import imaging

    if cover.shape != stego.shape or cover.dtype != np.uint8 or stego.dtype != np.uint8:
        return float(imaging.psnr(cover, stego))
    shifted = cover - stego  # uint8 wraps: a difference of -1, 0, +1 becomes 255, 0, 1
    shifted += 1  # ... and now 0, 1, 2; anything else is a larger change
    if np.count_nonzero(shifted > 2):
        return float(imaging.psnr(cover, stego))
    changed = shifted.size - np.count_nonzero(shifted == 1)
    if changed == 0:
        return float("inf")
    return float(10.0 * np.log10(255.0 * 255.0 * shifted.size / changed))


def seal_job(
    secret: bytes,
    cover: bytes | None,
    compress_level: int = DEFAULT_COMPRESS_LEVEL,
    covers_dir: str | None = None,
    writer: str = "fast",
) -> Sealed:
    """The whole server-side job, for a worker process: check, pick a cover, hide, encode the PNG.

    ``cover`` is the client's cover file or ``None`` for the library (plus
    ``covers_dir``); a cover too small is scaled up (``Sealed.cover`` says so).
    ``writer`` is ``imaging.save_png``'s. Raises ``InvalidImage`` and the stego
    ``CapacityError``.
    """
    from cloudp2p.stego import covers

    compressed = prepare_secret(secret)
    array, description = covers.choose_cover(needed_bits(compressed), cover, covers_dir=covers_dir or None)
    return _seal_prepared(compressed, array, None, compress_level, description, writer)


# -- owner side ------------------------------------------------------------------------------------------


def open_own_carrier(carrier: fmt.Carrier, content_key: bytes) -> OwnImage:
    header = fmt.read_header(carrier)
    ciphertext = fmt.read_payload(carrier, header)
    compressed = fmt.decrypt_payload(content_key, header, ciphertext)
    return OwnImage(
        image=fmt.decompress_secret(compressed, limit=MAX_SECRET_SIZE),
        image_id=image_id_text(header.image_id),
        payload_hash=fmt.payload_hash(ciphertext),
    )


def open_own(png: bytes, content_key: bytes) -> OwnImage:
    """The owner sees their own image with the content key the server returned."""
    return open_own_carrier(load_carrier(png), content_key)


def sign_rights(
    *,
    owner_ed25519: Ed25519PrivateKey,
    owner_id: str | int,
    viewer_id: str | int,
    image_id: str,
    payload_hash: bytes,
    views: int,
    version: int,
    issued_at_ms: int | None = None,
) -> bytes:
    """A signed rights blob (at most 262 bytes; base64 it to put it in JSON) for ``apply_rights``.

    ``views`` is the total number of views allowed (0 revokes); ``version``
    must be higher than any earlier rights for this viewer and image.
    """
    fields = {} if issued_at_ms is None else {"issued_at_ms": issued_at_ms}
    rights = Rights(
        owner_id=owner_id,
        viewer_id=viewer_id,
        image_id=image_id_bytes(image_id),
        views=views,
        version=version,
        payload_hash=payload_hash,
        **fields,
    )
    return rights.sign(owner_ed25519).to_bytes()


def grant_carrier(
    carrier: fmt.Carrier,
    content_key: bytes,
    *,
    owner_ed25519: Ed25519PrivateKey,
    owner_id: str | int,
    viewer_id: str | int,
    viewer_x25519_pub: bytes,
    views: int,
    version: int = 1,
    share_a: bytes | None = None,
) -> Rights:
    """Write the viewer's wrap and counter. ``share_a`` (from ``fmt.split_key``): an enforced copy,
    whose wrap holds that share instead of the content key."""
    header = fmt.read_header(carrier)
    ciphertext = fmt.read_payload(carrier, header)
    fmt.decrypt_payload(content_key, header, ciphertext)  # never grant a key that does not open the image
    blob = sign_rights(
        owner_ed25519=owner_ed25519,
        owner_id=owner_id,
        viewer_id=viewer_id,
        image_id=image_id_text(header.image_id),
        payload_hash=fmt.payload_hash(ciphertext),
        views=views,
        version=version,
    )
    signed = SignedRights.from_bytes(blob)
    held = content_key if share_a is None else share_a  # what the viewer's key unwraps
    wrapped = fmt.wrap(held, signed, viewer_x25519_pub, header.image_id, enforced=share_a is not None)
    counter = fmt.encode_counter(held, header.image_id, signed.rights.viewer_id, 0, version)
    carrier.write(fmt.WRAP_START, wrapped + counter)  # adjacent regions: one pass over the image
    return signed.rights


def grant(
    png: bytes,
    content_key: bytes,
    *,
    owner_ed25519: Ed25519PrivateKey,
    owner_id: str | int,
    viewer_id: str | int,
    viewer_x25519_pub: bytes,
    views: int,
    version: int = 1,
    compress_level: int = DEFAULT_COMPRESS_LEVEL,
) -> bytes:
    """The viewer's copy of the owner's image: content key wrapped to the viewer, signed rights, 0 used."""
    carrier = load_carrier(png)
    grant_carrier(
        carrier,
        content_key,
        owner_ed25519=owner_ed25519,
        owner_id=owner_id,
        viewer_id=viewer_id,
        viewer_x25519_pub=viewer_x25519_pub,
        views=views,
        version=version,
    )
    return save_carrier(carrier, compress_level)


def grant_enforced(
    png: bytes,
    content_key: bytes,
    *,
    owner_ed25519: Ed25519PrivateKey,
    owner_id: str | int,
    viewer_id: str | int,
    viewer_x25519_pub: bytes,
    views: int,
    version: int = 1,
    compress_level: int = DEFAULT_COMPRESS_LEVEL,
) -> tuple[bytes, bytes]:
    """An enforced copy: (the viewer's PNG, holding share A of a fresh split; share B, in clear).

    Seal share B for the viewer (``keywrap.seal_share``) and hand it to the cloud with the view
    limit; the copy alone opens nothing, even with the viewer's private key.
    """
    share_a, share_b = fmt.split_key(content_key)
    carrier = load_carrier(png)
    grant_carrier(
        carrier,
        content_key,
        owner_ed25519=owner_ed25519,
        owner_id=owner_id,
        viewer_id=viewer_id,
        viewer_x25519_pub=viewer_x25519_pub,
        views=views,
        version=version,
        share_a=share_a,
    )
    return save_carrier(carrier, compress_level), share_b


# -- viewer side -----------------------------------------------------------------------------------------


@attrs.define
class _Opened:
    header: fmt.Header
    content_key: bytes  # the wrapped key: share A of an enforced copy
    signed: SignedRights  # as found in the image, unverified
    enforced: bool = False


def _open_wrap(carrier: fmt.Carrier, viewer_x25519: X25519PrivateKey) -> _Opened:
    if not isinstance(viewer_x25519, X25519PrivateKey):
        raise KeyFormatError("viewer key: expected an X25519 private key")
    header = fmt.read_header(carrier)
    w = fmt.open_wrap(carrier.read(fmt.WRAP_START, fmt.WRAP_SIZE), viewer_x25519, header.image_id)
    return _Opened(header, w.key, w.signed, w.enforced)


def peek_carrier(carrier: fmt.Carrier, viewer_x25519: X25519PrivateKey) -> Envelope:
    opened = _open_wrap(carrier, viewer_x25519)
    r = opened.signed.rights
    return Envelope(
        image_id_text(opened.header.image_id), r.owner_id, r.viewer_id, r.version, r.views, opened.enforced
    )


def peek(png: bytes, viewer_x25519: X25519PrivateKey) -> Envelope:
    """Unverified: who the image claims to come from. Look up ``owner_id``'s Ed25519 key, then view."""
    return peek_carrier(load_carrier(png), viewer_x25519)


def _verify(
    signed: SignedRights, header: fmt.Header, *, viewer_id: str, owner_id: str, owner_pub: bytes
) -> Rights:
    rights = signed.verify(owner_pub)
    if rights.image_id != header.image_id:
        raise RightsMismatchError(
            f"the rights are for image {image_id_text(rights.image_id)}, "
            f"this is image {image_id_text(header.image_id)}"
        )
    if rights.viewer_id != viewer_id:
        raise RightsMismatchError(f"the rights are for viewer {rights.viewer_id!r}, not {viewer_id!r}")
    if rights.owner_id != owner_id:
        raise RightsMismatchError(
            f"the rights are signed as owner {rights.owner_id!r}, expected {owner_id!r}"
        )
    return rights


@attrs.frozen(repr=False)
class Viewer:
    """Who opens a received image, and whose signature its rights must carry.

    What every viewer-side call needs, together: the viewer's private X25519 key and user id,
    the owner's user id and raw Ed25519 public key (from the directory), and the viewer's ledger.
    Ids are checked (``user_id_text``) when they are used.
    """

    x25519: X25519PrivateKey
    user_id: str | int
    owner_id: str | int
    owner_ed25519: bytes
    ledger: Ledger

    def __repr__(self) -> str:
        return f"Viewer(user_id={self.user_id!r}, owner_id={self.owner_id!r})"


@attrs.define
class _ViewerState:
    opened: _Opened
    newest: SignedRights  # the verified newest rights (image or ledger)
    image_used: int
    ledger: LedgerEntry

    @property
    def views_used(self) -> int:
        return max(self.image_used, self.ledger.views_used)

    def status(self) -> ViewStatus:
        rights = self.newest.rights
        return ViewStatus(
            image_id=image_id_text(rights.image_id),
            rights=rights,
            views_used=self.views_used,
            views_left=max(0, rights.views - self.views_used),
        )


def _newer(a: SignedRights, b: SignedRights) -> SignedRights:
    """The rights that win: the higher version; on a tie (an owner's mistake) the smaller grant."""
    ka = (a.rights.version, -a.rights.views)
    kb = (b.rights.version, -b.rights.views)
    return a if ka >= kb else b


def _viewer_state(carrier: fmt.Carrier, viewer: Viewer, ledger_entry: LedgerEntry) -> _ViewerState:
    viewer_id, owner_id = user_id_text(viewer.user_id), user_id_text(viewer.owner_id)
    opened = _open_wrap(carrier, viewer.x25519)
    check = {"viewer_id": viewer_id, "owner_id": owner_id, "owner_pub": viewer.owner_ed25519}
    _verify(opened.signed, opened.header, **check)
    newest = opened.signed
    if ledger_entry.rights is not None:
        try:
            recorded = SignedRights.from_bytes(ledger_entry.rights)
            _verify(recorded, opened.header, **check)
        except RightsError as e:
            raise LedgerError(f"the ledger's rights for this image do not verify: {e}") from None
        newest = _newer(recorded, newest)
    region = carrier.read(fmt.COUNTER_START, fmt.COUNTER_SIZE)
    used, _version = fmt.decode_counter(region, opened.content_key, opened.header.image_id, viewer_id)
    return _ViewerState(opened, newest, used, ledger_entry)


def _rewrite(
    carrier: fmt.Carrier, state: _ViewerState, viewer_x25519: X25519PrivateKey, views_used: int
) -> None:
    """Write the newest rights (if the image holds older ones) and the views-used counter."""
    header, key = state.opened.header, state.opened.content_key
    rights = state.newest.rights
    counter = fmt.encode_counter(key, header.image_id, rights.viewer_id, views_used, rights.version)
    if state.newest.to_bytes() != state.opened.signed.to_bytes():
        viewer_pub = viewer_x25519.public_key().public_bytes_raw()
        wrapped = fmt.wrap(key, state.newest, viewer_pub, header.image_id, enforced=state.opened.enforced)
        carrier.write(fmt.WRAP_START, wrapped + counter)  # adjacent regions: one pass
    else:
        carrier.write(fmt.COUNTER_START, counter)


def status_carrier(carrier: fmt.Carrier, viewer: Viewer) -> ViewStatus:
    image_id = image_id_text(fmt.read_header(carrier).image_id)
    return _viewer_state(carrier, viewer, viewer.ledger.get(image_id)).status()


def status(png: bytes, viewer: Viewer) -> ViewStatus:
    """Views left for this viewer, without using one."""
    return status_carrier(load_carrier(png), viewer)


def view_carrier(
    carrier: fmt.Carrier, viewer: Viewer, share: bytes | None = None
) -> tuple[bytes | None, ViewStatus, bool]:
    """(secret image or None, status after the view, whether the carrier changed).

    ``share``: share B of an enforced copy's key, as the cloud released it for this view (opened);
    without it an enforced copy refuses (``ShareRequiredError``) and uses no view.
    """
    image_id = image_id_text(fmt.read_header(carrier).image_id)
    found: dict[str, Any] = {}

    def consume(entry: LedgerEntry) -> LedgerEntry:
        # Runs under the ledger's lock: the check and the record are one step.
        state = _viewer_state(carrier, viewer, entry)
        found["state"] = state
        left = state.status().views_left
        if left <= 0:
            found["image"] = None
            return LedgerEntry(state.views_used, state.newest.rights.version, state.newest.to_bytes())
        header, key = state.opened.header, state.opened.content_key
        if state.opened.enforced:
            if share is None:
                raise ShareRequiredError(
                    "this copy is enforced: each view needs the key share from the cloud"
                )
            key = fmt.join_key(key, share)
        ciphertext = fmt.read_payload(carrier, header)
        try:
            compressed = fmt.decrypt_payload(key, header, ciphertext)
        except WrongKeyError:
            if state.opened.enforced:
                raise WrongKeyError("the key share released by the cloud does not open this copy") from None
            # the key came from an authenticated wrap: the payload is damaged
            raise CorruptContainerError("the hidden image fails its integrity check") from None
        if fmt.payload_hash(ciphertext) != state.newest.rights.payload_hash:
            raise RightsMismatchError("the rights were signed for another payload than the one in this image")
        found["image"] = fmt.decompress_secret(compressed, limit=MAX_SECRET_SIZE)
        # The ledger is written first (here, before returning): if the process dies before the
        # image file is rewritten, the view is still counted. Failing safe costs the viewer a view.
        return LedgerEntry(state.views_used + 1, state.newest.rights.version, state.newest.to_bytes())

    entry = viewer.ledger.update(image_id, consume)
    state = found["state"]
    consumed = found["image"] is not None
    stale_rights = state.newest.to_bytes() != state.opened.signed.to_bytes()
    if consumed or state.image_used < entry.views_used or stale_rights:
        _rewrite(carrier, state, viewer.x25519, entry.views_used)
        changed = True
    else:
        changed = False
    final = attrs.evolve(state, image_used=entry.views_used, ledger=entry)
    return found["image"], final.status(), changed


def open_for_view(
    png: bytes, viewer: Viewer, *, share: bytes | None = None, compress_level: int = DEFAULT_COMPRESS_LEVEL
) -> ViewResult:
    """Use one view: the secret image while views remain (recorded in ledger and image), else the cover.

    Refuses (``RightsError``) rights not signed by ``viewer.owner_ed25519``, or
    signed for another image, viewer or owner; ``WrongKeyError`` if the image was
    not shared with this viewer. Store ``result.png`` in place of the old file. An enforced copy
    (``peek(...).enforced``) needs ``share``, the opened share B the cloud released for this view.
    """
    png = bytes(png)
    carrier = load_carrier(png)
    image, st, changed = view_carrier(carrier, viewer, share)
    new_png = save_carrier(carrier, compress_level) if changed else png
    return ViewResult(image=image, cover_png=new_png, png=new_png, status=st, consumed=image is not None)


def apply_rights_carrier(carrier: fmt.Carrier, blob: bytes, viewer: Viewer) -> ViewStatus:
    image_id = image_id_text(fmt.read_header(carrier).image_id)
    try:
        update = SignedRights.from_bytes(blob)
    except RightsError as e:
        raise RightsError(f"the rights update does not parse: {e.detail}") from None
    found: dict[str, Any] = {}

    def install(entry: LedgerEntry) -> LedgerEntry:
        state = _viewer_state(carrier, viewer, entry)
        _verify(
            update,
            state.opened.header,
            viewer_id=user_id_text(viewer.user_id),
            owner_id=user_id_text(viewer.owner_id),
            owner_pub=viewer.owner_ed25519,
        )
        if update.rights.payload_hash != state.opened.signed.rights.payload_hash:
            raise RightsMismatchError("the rights update was signed for another payload")
        if update.rights.version <= state.newest.rights.version:
            raise RightsOutdatedError(
                f"version {update.rights.version} is not newer than version {state.newest.rights.version}"
            )
        state.newest = update
        found["state"] = state
        return LedgerEntry(state.views_used, update.rights.version, update.to_bytes())

    entry = viewer.ledger.update(image_id, install)
    state = found["state"]
    _rewrite(carrier, state, viewer.x25519, entry.views_used)
    return attrs.evolve(state, image_used=entry.views_used, ledger=entry).status()


def apply_rights(
    png: bytes, blob: bytes, viewer: Viewer, *, compress_level: int = DEFAULT_COMPRESS_LEVEL
) -> tuple[bytes, ViewStatus]:
    """Install a newer signed rights blob from the owner: (new PNG to store, status).

    ``RightsOutdatedError`` if it is not newer than the rights in the image and the
    ledger (an older version never overrides a newer one); the ledger records
    it first, so the update holds even if the file is later replaced.
    """
    carrier = load_carrier(png)
    st = apply_rights_carrier(carrier, blob, viewer)
    return save_carrier(carrier, compress_level), st


__all__ = [
    "DEFAULT_COMPRESS_LEVEL",
    "EncryptionError",
    "Envelope",
    "ImageCarrier",
    "OwnImage",
    "Sealed",
    "ViewResult",
    "ViewStatus",
    "Viewer",
    "apply_rights",
    "grant",
    "grant_enforced",
    "open_for_view",
    "open_own",
    "peek",
    "seal",
    "seal_job",
    "sign_rights",
    "status",
]
