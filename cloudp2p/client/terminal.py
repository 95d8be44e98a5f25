"""Text from other people made safe to print on a terminal.

Image names, user names and error messages can come from peers or from the
cloud. Printed as they are, an ESC or CSI sequence in them could move the
cursor, rewrite earlier lines, set the window title or worse. Every string the
`cloudp2p` command prints goes through ``printable`` (control and format
characters are replaced by U+FFFD, line breaks only where the command itself
put them); JSON output needs nothing (``json.dumps`` escapes them).
"""

from __future__ import annotations

import unicodedata
from typing import Any

REPLACEMENT = "\ufffd"
# Cc: C0/C1 controls (ESC, CSI, BEL, CR, LF...); Cf: invisible format characters (bidi overrides);
# Zl/Zp: Unicode line and paragraph separators.
_UNSAFE = frozenset(("Cc", "Cf", "Zl", "Zp"))


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control or format character replaced by U+FFFD."""
    out = []
    for ch in text:
        if keep_newlines and ch == "\n":
            out.append(ch)
        elif unicodedata.category(ch) in _UNSAFE:
            out.append(REPLACEMENT)
        else:
            out.append(ch)
    return "".join(out)


def clean(value: Any) -> Any:
    """A copy of a JSON-like result with every string made ``printable`` (keys included)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value
