"""The `encrypt` op with fakes for the transfer manager, the directory and the worker pool."""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import attrs
import pytest
from twisted.internet import defer, task
from twisted.python.failure import Failure

from cloudp2p.config import Schema
from cloudp2p.encryption import container as c
from cloudp2p.encryption import format as fmt
from cloudp2p.encryption import keywrap
from cloudp2p.encryption.config import EncryptionSettings
from cloudp2p.encryption.errors import WrongKeyError
from cloudp2p.encryption.keys import UserKeys
from cloudp2p.encryption.ops import encrypt, ops
from cloudp2p.encryption.service import EncryptionEngine, Owner
from cloudp2p.ops import OpError, RequestContext
from cloudp2p.stego.capacity import CapacityError
from cloudp2p.transfer.errors import BadTransferMeta, TransferTimeout

CLIENT = ("127.0.0.5", 40000)


@attrs.define
class FakeOffer:
    data: bytes
    port: int
    transfer_id: str
    timeout: float
    max_fetches: int
    closed: bool = False
    waiting: list = attrs.Factory(list)

    @property
    def size(self):
        return len(self.data)

    @property
    def sha256(self):
        return hashlib.sha256(self.data).hexdigest()

    def meta(self):
        return {"port": self.port, "transfer_id": self.transfer_id, "size": self.size, "sha256": self.sha256}

    def when_closed(self):
        d = defer.Deferred()
        if self.closed:
            d.callback(self)
        else:
            self.waiting.append(d)
        return d

    def close(self):
        if not self.closed:
            self.closed = True
            for d in self.waiting:
                d.callback(self)


@attrs.define
class FakeTransfers:
    files: dict = attrs.Factory(dict)  # (host, port, tid) -> bytes | Exception | "hang"
    fetched: list = attrs.Factory(list)
    offers: list = attrs.Factory(list)

    def client_offer(self, data: bytes, port: int) -> dict:
        tid = os.urandom(16).hex()
        self.files[(CLIENT[0], port, tid)] = data
        return {
            "port": port,
            "transfer_id": tid,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    def fetch(self, address, transfer_id, size, sha256, progress=None):
        self.fetched.append((address, transfer_id))
        item = self.files.get((address[0], address[1], transfer_id))
        if item is None:
            return defer.fail(BadTransferMeta("no such offer"))
        if item == "hang":
            return defer.Deferred()
        if isinstance(item, Exception):
            return defer.fail(item)
        assert hashlib.sha256(item).hexdigest() == sha256 and len(item) == size
        return defer.succeed(item)

    def offer(self, data, *, timeout=None, max_fetches=None):
        o = FakeOffer(data, 50000 + len(self.offers), os.urandom(16).hex(), timeout, max_fetches)
        self.offers.append(o)
        return o


def fake_seal_job(
    secret: bytes, cover: bytes | None, level: int, covers_dir: str, writer: str = "fast"
) -> c.Sealed:
    """What a worker returns, without image handling: the container on bytes."""
    if not secret.startswith(b"IMG"):
        from cloudp2p.errors import InvalidImage

        raise InvalidImage("not an image")
    if cover == b"tiny":
        raise CapacityError("the cover holds 10 bytes; use a cover of at least 100x100 pixels")
    compressed = fmt.compress_secret(secret)
    carrier = fmt.BytesCarrier(bytearray(fmt.needed_bytes(len(compressed))))
    sealed = c.seal_carrier(carrier, compressed)
    return attrs.evolve(sealed, png=b"PNG" + bytes(carrier.buffer), cover="library: test", psnr=55.5)


@attrs.define
class FakeServer:
    reactor: Any
    transfers: Any
    encryption: Any
    directory: Any = "directory"
    config: Any = None
    order: list[Any] = attrs.field(factory=list)  # (priority, cost) of each job sent to the pool


OWNER_KEYS = UserKeys.generate()


async def fake_auth(directory, token):
    assert directory == "directory"
    if token != "good-token":
        raise OpError("not_signed_in", "sign in first")
    return Owner("user-1", OWNER_KEYS.public.x25519)


@pytest.fixture
def setup():
    clock = task.Clock()
    jobs = []
    order = []

    def run_job(fn, *args, priority=None, cost=0, on_start=None):
        assert fn is c.seal_job  # the handler sends the real job to the pool
        jobs.append(args)
        order.append((priority, cost))
        return defer.maybeDeferred(fake_seal_job, *args)

    engine = EncryptionEngine(
        clock, EncryptionSettings(result_ttl=60, fetch_timeout=5), run_job=run_job, authenticate=fake_auth
    )
    server = FakeServer(clock, FakeTransfers(), engine)
    server.order = order
    return server, clock, jobs


def call(server, args, request_id="r1"):
    ctx = RequestContext(request_id=request_id, op="encrypt", client=CLIENT, server=server)
    d = defer.ensureDeferred(encrypt(ctx, args))
    out = []
    d.addBoth(out.append)
    return out, d


def done(out):
    assert out, "the handler did not finish"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def test_encrypt_happy_path_reply_and_forgetting(setup):
    server, clock, jobs = setup
    secret = b"IMG" + os.urandom(5000)
    image = server.transfers.client_offer(secret, 41000)
    reply = done(call(server, {"token": "good-token", "image": image, "cover": None, "name": "cat.png"})[0])
    assert set(reply) == {
        "image_id",
        "result",
        "content_key_sealed",
        "payload_hash",
        "cover",
        "psnr",
        "owner_id",
        "name",
        "host",
    }
    assert server.transfers.fetched == [((CLIENT[0], 41000), image["transfer_id"])]  # from the client's host
    assert jobs == [(secret, None, 1, "", "fast")]
    (offer,) = server.transfers.offers
    assert reply["result"] == {
        "port": offer.port,
        "transfer_id": offer.transfer_id,
        "size": offer.size,
        "sha256": offer.sha256,
    }
    assert offer.max_fetches == 1 and offer.timeout == 60
    key = keywrap.open_reply_key(reply, OWNER_KEYS.x25519_private)
    with pytest.raises(WrongKeyError):  # sealed for the owner only
        keywrap.open_reply_key(reply, UserKeys.generate().x25519_private)
    own = c.open_own_carrier(fmt.BytesCarrier(bytearray(offer.data[3:])), key)
    assert own.image == secret and own.image_id == reply["image_id"]
    assert reply["owner_id"] == "user-1" and reply["psnr"] == 55.5 and reply["name"] == "cat.png"
    # The engine keeps the offer (PNG only) and nothing else; the offer closes after the TTL.
    assert server.encryption.open_offers == 1
    engine_state = repr(vars(server.encryption))
    assert reply["content_key_sealed"] not in engine_state and key.hex() not in engine_state
    assert base64.b64encode(key).decode() not in repr(reply)  # never in clear in the reply
    clock.advance(61)
    assert offer.closed and server.encryption.open_offers == 0


def test_result_offer_closed_by_the_transfer_layer_is_forgotten(setup):
    server, clock, _ = setup
    image = server.transfers.client_offer(b"IMG1234", 41000)
    done(call(server, {"token": "good-token", "image": image, "cover": None, "name": "x"})[0])
    server.transfers.offers[0].close()  # fetched once: the transfer layer closes it
    assert server.encryption.open_offers == 0
    assert clock.getDelayedCalls() == []


def test_cover_is_fetched_too(setup):
    server, _, jobs = setup
    image = server.transfers.client_offer(b"IMG" + bytes(100), 41000)
    cover = server.transfers.client_offer(b"COVER", 41001)
    done(call(server, {"token": "good-token", "image": image, "cover": cover, "name": "x"})[0])
    assert jobs[0][1] == b"COVER"


@pytest.mark.parametrize(
    "change, code",
    [
        ({"token": "bad"}, "not_signed_in"),
        ({"token": None}, "not_signed_in"),
        ({"image": None}, "bad_request"),
        ({"image": {"port": 0, "transfer_id": "a", "size": 1, "sha256": "0" * 64}}, "bad_request"),
        ({"image": {"port": 1, "transfer_id": "a", "size": True, "sha256": "0" * 64}}, "bad_request"),
        ({"image": {"port": 1, "transfer_id": "a", "size": 1, "sha256": "XYZ"}}, "bad_request"),
        ({"image": {"port": 1, "transfer_id": "a", "size": 2**40, "sha256": "0" * 64}}, "image_too_large"),
        ({"cover": "cover.png"}, "bad_request"),
        ({"name": 5}, "bad_request"),
        ({"name": "x" * 300}, "bad_request"),
    ],
)
def test_bad_requests_are_refused_before_any_work(setup, change, code):
    server, _, jobs = setup
    image = server.transfers.client_offer(b"IMG", 41000)
    args = {"token": "good-token", "image": image, "cover": None, "name": "x", **change}
    with pytest.raises(OpError) as e:
        done(call(server, args)[0])
    assert e.value.code == code
    assert jobs == [] and server.transfers.offers == []


def test_not_an_image_and_cover_too_small(setup):
    server, _, _ = setup
    image = server.transfers.client_offer(b"hello world", 41000)
    with pytest.raises(OpError) as e:
        done(call(server, {"token": "good-token", "image": image, "cover": None, "name": "x"})[0])
    assert e.value.code == "invalid_image"
    image = server.transfers.client_offer(b"IMG", 41000)
    cover = server.transfers.client_offer(b"tiny", 41001)
    with pytest.raises(OpError) as e:
        done(call(server, {"token": "good-token", "image": image, "cover": cover, "name": "x"})[0])
    assert e.value.code == "cover_too_small" and "100x100" in e.value.message
    assert server.transfers.offers == []


def test_fetch_failures(setup):
    server, clock, _ = setup
    image = server.transfers.client_offer(b"IMG", 41000)
    server.transfers.files[(CLIENT[0], 41000, image["transfer_id"])] = TransferTimeout("gone")
    with pytest.raises(OpError) as e:
        done(call(server, {"token": "good-token", "image": image, "cover": None, "name": "x"})[0])
    assert e.value.code == "transfer_failed"
    server.transfers.files[(CLIENT[0], 41000, image["transfer_id"])] = "hang"
    out, _ = call(server, {"token": "good-token", "image": image, "cover": None, "name": "x"})
    assert out == []
    clock.advance(5.1)  # fetch_timeout
    with pytest.raises(OpError) as e:
        done(out)
    assert e.value.code == "transfer_failed" and "5 s" in e.value.message
    unknown = dict(image, transfer_id="f" * 32)
    with pytest.raises(OpError) as e:
        done(call(server, {"token": "good-token", "image": unknown, "cover": None, "name": "x"})[0])
    assert e.value.code == "bad_request"


def test_no_transfers_or_engine_means_unavailable(setup):
    server, _, _ = setup
    image = server.transfers.client_offer(b"IMG", 41000)
    for broken in (attrs.evolve(server, transfers=None), attrs.evolve(server, encryption=None)):
        with pytest.raises(OpError) as e:
            done(call(broken, {"token": "good-token", "image": image, "cover": None, "name": "x"})[0])
        assert e.value.code == "unavailable"


def test_rerun_of_one_request_gives_an_independent_result(setup):
    server, _, _ = setup
    image = server.transfers.client_offer(b"IMG" + os.urandom(100), 41000)
    args = {"token": "good-token", "image": image, "cover": None, "name": "x"}
    a = done(call(server, args, "same-id")[0])
    b = done(call(server, args, "same-id")[0])  # a re-assigned request fetches again from the offer
    assert a["image_id"] != b["image_id"] and a["content_key_sealed"] != b["content_key_sealed"]


def test_ops_registers_encrypt():
    assert ops(object()) == {"encrypt": encrypt}


def test_engine_from_config_and_stop():
    clock = task.Clock()
    schema = Schema((EncryptionSettings.SECTION,))
    section = schema.validate({"encryption": {"result_ttl": 10}})["encryption"]
    engine = EncryptionEngine(clock, section, run_job=lambda *a: None)
    s = engine.settings
    assert s.result_ttl == 10.0 and s.png_compress_level == 1 and s.fetch_timeout == 120.0
    assert s.png_writer == "fast"
    pillow = EncryptionEngine(clock, EncryptionSettings(png_writer="pillow"), run_job=lambda *a: None)
    assert pillow.settings.png_writer == "pillow"
    transfers = FakeTransfers()
    offer = engine.offer_result(transfers, b"png")
    engine.stop()
    assert offer.closed and engine.open_offers == 0 and clock.getDelayedCalls() == []
