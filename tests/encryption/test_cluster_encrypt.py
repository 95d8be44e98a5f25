"""`encrypt` end to end through a real 3-server cloud (twistd processes on 127.0.0.1, free ports)."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from cloudp2p.directory.token_seal import sign_in
from cloudp2p.encryption import container as c
from cloudp2p.encryption import keywrap
from cloudp2p.encryption.keys import UserKeys
from cloudp2p.errors import RequestFailed
from cloudp2p.routing.client import ClientRouter
from cloudp2p.testing.cluster import LocalCluster
from cloudp2p.transfer import TransferManager

from .test_heartbeat import small_photo

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LOCAL = "127.0.0.1"


@pytest.fixture
def cloud(tmp_path):
    overrides = {
        "directory": {"backend": "sqlite", "path": str(tmp_path / "dir.sqlite3"), "scrypt_n": 1024},
        "server": {"test_ops": True},  # recent_runs
    }
    cluster = LocalCluster(str(tmp_path / "cloud"), 3, overrides=overrides)
    try:
        cluster.start(30)
        cluster.wait_converged(30)
        yield cluster
    except BaseException:
        for sid, server in cluster.servers.items():
            print(f"----- server {sid} -----\n{server.tail(30)}")
        raise
    finally:
        cluster.stop()


@pytest_twisted.ensureDeferred
async def test_encrypt_through_the_cloud(cloud):
    router = ClientRouter(reactor, cloud.client_list, timeout=60.0)
    router.start()
    transfers = TransferManager(reactor, interface=LOCAL)
    try:
        keys = UserKeys.generate()
        user = await router.submit(
            "register", {"username": "alice", "password": "pw-alice-1", "keys": keys.public.to_json()}
        )
        token = (await sign_in(router, {"username": "alice", "password": "pw-alice-1"}))["token"]
        secret = small_photo()
        offer = transfers.offer(secret, timeout=60)
        seen = set()
        for _ in range(3):
            reply = await router.submit(
                "encrypt", {"token": token, "image": offer.meta(), "cover": None, "name": "a.png"}
            )
            meta = reply["result"]
            png = await transfers.fetch(
                (LOCAL, meta["port"]), meta["transfer_id"], meta["size"], meta["sha256"]
            )
            key = keywrap.open_reply_key(reply, keys.x25519_private)
            own = await task.deferLater(reactor, 0, c.open_own, png, key)
            assert own.image == secret and reply["owner_id"] == user["user_id"] and reply["psnr"] >= 50
            seen.add(reply["image_id"])
        assert len(seen) == 3
        with pytest.raises(RequestFailed) as e:
            await router.submit(
                "encrypt", {"token": "nope", "image": offer.meta(), "cover": None, "name": "a"}
            )
        assert e.value.code == "not_signed_in"
        offer.close()
    finally:
        transfers.stop()
        await router.stop()


@pytest_twisted.ensureDeferred
async def test_encrypt_survives_a_crash_of_the_server_running_it(cloud):
    """kill -9 the server while it hides the image: the router re-assigns, the new server fetches again."""
    from bench.encrypt import make_photo

    router = ClientRouter(reactor, cloud.client_list, timeout=60.0)
    router.start()
    transfers = TransferManager(reactor, interface=LOCAL)
    try:
        keys = UserKeys.generate()
        await router.submit(
            "register", {"username": "bob", "password": "pw-bob-12", "keys": keys.public.to_json()}
        )
        token = (await sign_in(router, {"username": "bob", "password": "pw-bob-12"}))["token"]
        secret = await task.deferLater(reactor, 0, make_photo)  # 1 MB: about a second of work
        offer = transfers.offer(secret, timeout=60)
        pending = router.submit(
            "encrypt", {"token": token, "image": offer.meta(), "cover": None, "name": "b"}
        )
        victim = None
        for _ in range(200):  # bounded: 10 s
            for sid, address in cloud.client_addresses.items():
                status = await router.query(address, "status", timeout=1.0)
                if status["running"] > 0:
                    victim = sid
            if victim is not None or pending.called:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        assert victim is not None, "never saw the encrypt running"
        cloud.servers[victim].kill()
        reply = await pending
        meta = reply["result"]
        png = await transfers.fetch((LOCAL, meta["port"]), meta["transfer_id"], meta["size"], meta["sha256"])
        key = keywrap.open_reply_key(reply, keys.x25519_private)
        own = await task.deferLater(reactor, 0, c.open_own, png, key)
        assert own.image == secret
        reruns = []
        for sid, address in cloud.client_addresses.items():
            if sid != victim:
                runs = (await router.query(address, "recent_runs", timeout=2.0))["runs"]
                reruns += [r for r in runs if r[1] == "encrypt"]
        assert reruns, "the request was not re-run by a surviving server"
        offer.close()
    finally:
        transfers.stop()
        await router.stop()
