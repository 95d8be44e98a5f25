"""Pillow work the client does: checking that a file is an image, making thumbnails.

Every function here blocks (decoding pixels): the daemon calls them in a thread.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from cloudp2p.errors import InvalidImage

THUMBNAIL_SIDE = 128
THUMBNAIL_MAX_BYTES = 12 * 1024
MAX_PIXELS = 64 * 1024 * 1024


def check_image(data: bytes, what: str = "the file") -> tuple[str, int, int]:
    """``(format, width, height)`` of an image Pillow can fully decode, else ``InvalidImage``."""
    if not data:
        raise InvalidImage(f"({what} is empty)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                if width * height > MAX_PIXELS:
                    raise InvalidImage(f"({what} is {width}x{height} pixels, too large)")
                fmt = im.format or "unknown"
                im.load()
    except InvalidImage:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as e:
        raise InvalidImage(f"({what}: {e})") from None
    return fmt, width, height


def make_thumbnail(data: bytes) -> bytes:
    """A PNG (or, if that is too big, a JPEG) at most 128 px on its long side and 12 KiB."""
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        side = THUMBNAIL_SIDE
        while True:
            thumb = im.copy()
            thumb.thumbnail((side, side))
            out = io.BytesIO()
            thumb.save(out, format="PNG", optimize=True)
            if out.tell() <= THUMBNAIL_MAX_BYTES:
                return out.getvalue()
            for quality in (85, 70, 50, 30):
                out = io.BytesIO()
                thumb.save(out, format="JPEG", quality=quality)
                if out.tell() <= THUMBNAIL_MAX_BYTES:
                    return out.getvalue()
            side //= 2
            if side < 8:
                raise InvalidImage("(cannot make a small enough thumbnail)")
