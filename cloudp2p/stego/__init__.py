"""Steganography: hide bytes in the least significant bits of a cover image.

- ``engine``: ``embed`` / ``extract`` / ``capacity_bits`` on uint8 numpy arrays (LSB matching
  at keyed pseudo-random positions); ``CapacityError``.
- ``positions``: the keyed position sequence.
- ``imaging``: everything that opens untrusted image bytes; PNG saving; thumbnails; PSNR.
- ``covers``: the default cover library and supplied covers.
- ``pool``: run heavy work off the reactor thread.
- ``analysis``: chi-square and RS steganalysis (tests and benchmarks).
- ``stegano_compat``: a reader of stegano's ``lsb.hide`` format.
"""

from cloudp2p.stego.capacity import CapacityError, capacity_bits
from cloudp2p.stego.engine import embed, extract

__all__ = ["CapacityError", "capacity_bits", "embed", "extract"]
