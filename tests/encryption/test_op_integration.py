"""`encrypt` with its real neighbours in one process: directory Store, UDP transfers, process pool."""

from __future__ import annotations

import base64

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor, task

from cloudp2p.directory import default_section, open_store
from cloudp2p.encryption import container as c
from cloudp2p.encryption import keywrap
from cloudp2p.encryption.config import EncryptionSettings
from cloudp2p.encryption.keys import UserKeys
from cloudp2p.encryption.ops import encrypt
from cloudp2p.encryption.service import EncryptionEngine
from cloudp2p.ops import OpError, RequestContext
from cloudp2p.transfer import TransferManager

from .test_heartbeat import small_photo

LOCAL = "127.0.0.1"


@attrs.define
class Server:
    reactor: object
    directory: object
    transfers: TransferManager
    encryption: EncryptionEngine
    config: object = None


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_encrypt_with_real_store_transfers_and_pool(tmp_path):
    store = open_store(
        default_section(backend="sqlite", path=str(tmp_path / "d.sqlite3"), scrypt_n=1024), reactor
    )
    engine = EncryptionEngine(reactor, EncryptionSettings(workers=1))
    server = Server(reactor, store, TransferManager(reactor, interface=LOCAL), engine)
    client = TransferManager(reactor, interface=LOCAL)
    try:
        keys = UserKeys.generate()
        user = await store.register("r1", "alice", "correct horse", keys.public.to_json())
        token = (await store.sign_in("alice", "correct horse"))["token"]
        secret = small_photo()
        offer = client.offer(secret, timeout=60)
        ctx = RequestContext(request_id="req-1", op="encrypt", client=(LOCAL, 40000), server=server)
        reply = await encrypt(ctx, {"token": token, "image": offer.meta(), "cover": None, "name": "a.png"})
        assert reply["owner_id"] == user["user_id"] and reply["psnr"] >= 50
        meta = reply["result"]
        png = await client.fetch((LOCAL, meta["port"]), meta["transfer_id"], meta["size"], meta["sha256"])
        key = keywrap.open_reply_key(reply, keys.x25519_private)
        own = await task.deferLater(reactor, 0, c.open_own, png, key)
        assert own.image == secret and own.image_id == reply["image_id"]
        assert base64.b64decode(reply["payload_hash"]) == own.payload_hash
        # Fetched once: the transfer layer closed the result offer and the engine let go of it.
        for _ in range(50):
            if server.encryption.open_offers == 0:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        assert server.encryption.open_offers == 0
        # A stale token is refused before anything is fetched.
        with pytest.raises(OpError) as e:
            await encrypt(ctx, {"token": "stale", "image": offer.meta(), "cover": None, "name": "a.png"})
        assert e.value.code == "not_signed_in"
        offer.close()
    finally:
        client.stop()
        server.transfers.stop()
        server.encryption.stop()
        await store.close()
