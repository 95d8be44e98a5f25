"""The ``[encryption]`` section of a server's config.

[encryption]
covers_dir = ""            # extra cover images (PNG/JPEG) besides the built-in library; "" = none
workers = 2                # processes that hide images (CPU-bound work never runs on the reactor)
png_compress_level = 1     # effort 0-9 for result PNGs (the fast writer maps it to ISA-L's 0-3)
png_writer = "fast"        # "fast" (numpy + ISA-L, stego/pngcodec.py) or "pillow" (the slower old path)
busy_after = 1.0           # seconds of queued work before a job is refused for another server; 0 = never
queue_order = "smallest_first"  # or "arrival" (first come first served, never busy: the old order)
max_image_size = 67108864  # largest secret or cover accepted, bytes
fetch_timeout = 120.0      # seconds to fetch the client's image (and cover)
result_ttl = 300.0         # seconds the result stays offered for the client to fetch
"""

from __future__ import annotations

import os

from cloudp2p.config import in_range, one_of, seconds, section, setting


def _covers_dir(value: str) -> str:
    if value and not os.path.isdir(value):
        raise ValueError(f"{value!r} is not a directory")
    return value


@section("encryption", doc="hiding images in covers: cover library, worker processes, PNG level, limits")
class EncryptionSettings:
    """The ``[encryption]`` section, as the ``EncryptionEngine`` uses it."""

    covers_dir: str = setting("", _covers_dir, "extra covers besides the built-in library")
    workers: int = setting(2, in_range(1, 64), "processes that hide images")
    png_compress_level: int = setting(1, in_range(0, 9), "zlib-style level of result PNGs")
    png_writer: str = setting("fast", one_of("fast", "pillow"), "PNG encoder of result images")
    busy_after: float = setting(1.0, in_range(0, 3600), "seconds of queued work before busy")
    queue_order: str = setting(
        "smallest_first", one_of("smallest_first", "arrival"), "order of waiting encrypt jobs"
    )
    max_image_size: int = setting(64 * 1024 * 1024, in_range(1024, 2**31), "largest secret/cover, bytes")
    fetch_timeout: float = setting(120.0, seconds, "seconds to fetch the client's image")
    result_ttl: float = setting(300.0, seconds, "seconds the result stays offered")


SECTION = EncryptionSettings.SECTION
