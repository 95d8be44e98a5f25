"""Thumbnail checks (blocking: Pillow runs off the reactor thread).

A thumbnail must be a real PNG or JPEG image, at most ``MAX_SIDE`` pixels on its
long side and at most ``MAX_BYTES`` bytes. The header is read first and the
size checked before any pixel is decoded, so a small file that claims to be a
huge image (a decompression bomb) is refused without allocating its pixels.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from cloudp2p.ops import OpError

MAX_SIDE = 128
MAX_BYTES = 12 * 1024
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg"}


def check_thumbnail(data: bytes) -> str:
    """Return the MIME type of ``data`` or raise ``OpError("bad_thumbnail", ...)``."""
    if not data:
        raise OpError("bad_thumbnail", "thumbnail is empty")
    if len(data) > MAX_BYTES:
        raise OpError("bad_thumbnail", f"thumbnail is {len(data)} bytes, at most {MAX_BYTES} are allowed")
    try:
        # Image.open reads the header only (and refuses absurd sizes itself); the pixels are
        # decoded by load(), after the size check. (No warnings.catch_warnings: it is not
        # thread-safe, and this runs on a pool thread.)
        with Image.open(io.BytesIO(data), formats=list(_MIME)) as image:
            width, height = image.size
            if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
                raise OpError(
                    "bad_thumbnail",
                    f"thumbnail is {width}x{height} pixels, at most {MAX_SIDE} on its long side",
                )
            mime = _MIME[image.format]
            image.load()
    except OpError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # the warning if run with -W error
        raise OpError(
            "bad_thumbnail", f"thumbnail claims far more pixels than {MAX_SIDE}x{MAX_SIDE}"
        ) from None
    except UnidentifiedImageError:
        raise OpError("bad_thumbnail", "thumbnail must be a PNG or JPEG image") from None
    except (OSError, ValueError, SyntaxError, EOFError, KeyError, IndexError, TypeError, MemoryError):
        raise OpError("bad_thumbnail", "thumbnail is a damaged or truncated image") from None
    return mime
