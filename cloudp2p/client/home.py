"""The client home directory: where everything a user owns on this machine lives.

Layout (all directories 0700, all files 0600)::

    DIR/client.toml          the client's configuration (servers...)
    DIR/control.sock         the daemon's UNIX control socket (while it runs)
    DIR/identity.json        the user's private keys (X25519 and Ed25519)
    DIR/session.json         who is registered here, and the current session token
    DIR/state.json           images, inbox, outbox, grants, applied peer messages
    DIR/originals/           the images the user encrypted, as given
    DIR/encrypted/           the same images hidden in their covers (from the cloud)
    DIR/received/            copies other users shared with us (sealed containers)
    DIR/ledger/              the view ledger of received copies
    DIR/views/               decoded images written by `cloudp2p view`
    DIR/thumbnails/USER/     thumbnails of images other users offer

Every write is atomic (temporary file in the same directory, fsync, rename)
so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from cloudp2p.client.errors import HomeError
from cloudp2p.files import atomic_write

SUBDIRS = ("originals", "encrypted", "received", "ledger", "views", "thumbnails")

# The kernel limits a UNIX socket path (sun_path) to 108 bytes including the NUL.
MAX_SOCKET_PATH = 107


def default_home() -> Path:
    """``$CLOUDP2P_HOME``, else ``$XDG_DATA_HOME/cloudp2p``, else ``~/.local/share/cloudp2p``."""
    explicit = os.environ.get("CLOUDP2P_HOME")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "cloudp2p"


class Home:
    """Paths inside one home directory, and safe ways to write them."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.path.abspath(os.fspath(path)))

    # -- paths -------------------------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.path / "client.toml"

    @property
    def control_socket(self) -> Path:
        return self.path / "control.sock"

    @property
    def identity_file(self) -> Path:
        return self.path / "identity.json"

    @property
    def session_file(self) -> Path:
        return self.path / "session.json"

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    def sub(self, name: str) -> Path:
        if name not in SUBDIRS:
            raise ValueError(f"unknown home subdirectory {name!r}")
        return self.path / name

    # -- creation and checks -----------------------------------------------------------------------

    def create(self) -> None:
        """Create the home and its subdirectories (0700); tighten a home that is too open."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._check_owned(self.path)
            os.chmod(self.path, 0o700)
            for name in SUBDIRS:
                sub = self.path / name
                sub.mkdir(mode=0o700, exist_ok=True)
                os.chmod(sub, 0o700)
        except OSError as e:
            raise HomeError(f"{self.path}: {e.strerror}") from None
        if len(os.fsencode(self.control_socket)) > MAX_SOCKET_PATH:
            raise HomeError(
                f"{self.path}: the path is too long for a UNIX socket "
                f"(at most {MAX_SOCKET_PATH - len('/control.sock')} bytes); choose a shorter --home"
            )

    def _check_owned(self, path: Path) -> None:
        st = os.stat(path)
        if st.st_uid != os.getuid():
            raise HomeError(f"{path} belongs to another user (uid {st.st_uid}); choose another --home")
        if not stat.S_ISDIR(st.st_mode):
            raise HomeError(f"{path} is not a directory")

    def exists(self) -> bool:
        return self.path.is_dir()

    # -- atomic writes -----------------------------------------------------------------------------

    def write_bytes(self, path: str | os.PathLike[str], data: bytes) -> Path:
        """Write ``data`` to ``path`` atomically with mode 0600."""
        return atomic_write(path, data)

    def write_json(self, path: str | os.PathLike[str], obj: Any) -> Path:
        return atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    def read_json(self, path: str | os.PathLike[str], default: Any = None) -> Any:
        path = Path(path)
        try:
            with open(path, "rb") as f:
                return json.load(f)
        except FileNotFoundError:
            return default
        except (OSError, ValueError) as e:
            raise HomeError(f"{path}: cannot read: {e}") from None

    def relative(self, path: str | os.PathLike[str]) -> str:
        """``path`` relative to the home (how the state file records it)."""
        return os.path.relpath(os.fspath(path), self.path)

    def resolve(self, relative: str) -> Path:
        """A path recorded relative to the home, made absolute; refuses to leave the home."""
        full = (self.path / relative).resolve()
        if self.path.resolve() not in full.parents:
            raise HomeError(f"{relative!r} points outside the home directory")
        return full
