"""Regression (issue 7 stress run): the server that ran `encrypt` dies after replying.

The encrypted result lived only in that server's memory, so the client's fetch
timed out and the `encrypt` command failed. The client now asks the cloud again
(its photo is still offered) a bounded number of times.
"""

from __future__ import annotations

import os

from cloudp2p.client import errors as cerr
from cloudp2p.client.stories import images

from .fakes import FakeCloud, small_png


def _photo(tmp_path):
    path = tmp_path / "cat.png"
    path.write_bytes(small_png(1))
    return str(path)


def _losing(monkeypatch, lose: int):
    """Make the first ``lose`` encrypt replies point at a result that is gone (its server died)."""
    real = FakeCloud.encrypt
    calls = []

    async def encrypt(self, token, image, cover, name):
        reply = await real(self, token, image, cover, name)
        calls.append(reply["image_id"])
        if len(calls) <= lose:
            self.dir.hub.offers.pop(reply["result"]["port"]).close()
        return reply

    monkeypatch.setattr(FakeCloud, "encrypt", encrypt)
    return calls


def test_result_lost_once_is_encrypted_again(world, tmp_path, monkeypatch):
    alice = world.signed_up("alice")
    calls = _losing(monkeypatch, lose=1)
    enc = alice.cmd("encrypt", path=_photo(tmp_path))
    assert len(calls) == 2
    assert enc["image_id"] == calls[1]
    owned = alice.cmd("images")["owned"]
    assert [o["image_id"] for o in owned] == [calls[1]]
    assert open(enc["encrypted"], "rb").read().startswith(b"\x89PNG")
    # Nothing of the lost attempt is left in the home.
    left = os.listdir(os.path.dirname(enc["encrypted"]))
    assert left == [os.path.basename(enc["encrypted"])]
    # And the photo offer was closed at the end, as before (only the fake server's result is left).
    photo = small_png(1)
    assert [o for o in world.hub.offers.values() if o.data == photo] == []


def test_result_lost_every_time_fails_after_a_bounded_number_of_tries(world, tmp_path, monkeypatch):
    alice = world.signed_up("alice")
    calls = _losing(monkeypatch, lose=1000)
    assert isinstance(alice.fails("encrypt", path=_photo(tmp_path)), cerr.TransferFailed)
    assert len(calls) == images.ENCRYPT_ATTEMPTS
    assert alice.cmd("images")["owned"] == []
    assert world.hub.offers == {}
