"""The `encrypt` op's session check against a real directory Store (SQLite, real reactor)."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from cloudp2p.directory import default_section, open_store
from cloudp2p.encryption.keys import UserKeys
from cloudp2p.encryption.service import directory_authenticator
from cloudp2p.ops import OpError


@pytest_twisted.ensureDeferred
async def test_directory_authenticator_accepts_a_session_and_refuses_others(tmp_path):
    section = default_section(backend="sqlite", path=str(tmp_path / "d.sqlite3"), scrypt_n=1024)
    store = open_store(section, reactor)
    try:
        keys = UserKeys.generate()
        user = await store.register("r1", "alice", "correct horse", keys.public.to_json())
        session = await store.sign_in("alice", "correct horse")
        owner = await directory_authenticator(store, session["token"])
        assert owner.user_id == user["user_id"]
        assert owner.x25519 == keys.public.x25519  # the key the content key gets sealed to
        with pytest.raises(OpError) as e:
            await directory_authenticator(store, "not-a-token")
        assert e.value.code == "not_signed_in"
        await store.sign_out(None, session["token"])
        with pytest.raises(OpError) as e:
            await directory_authenticator(store, session["token"])
        assert e.value.code == "not_signed_in"
        with pytest.raises(OpError) as e:
            await directory_authenticator(None, session["token"])
        assert e.value.code == "unavailable"
    finally:
        await store.close()
