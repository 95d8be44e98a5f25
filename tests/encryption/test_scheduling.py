"""Encrypt scheduling: work in bytes, smallest first with ageing, busy instead of a long queue."""

from __future__ import annotations

import os

import pytest
from twisted.internet import defer, task
from twisted.python.failure import Failure

from cloudp2p.config import Schema
from cloudp2p.encryption import scheduling
from cloudp2p.encryption.config import EncryptionSettings
from cloudp2p.encryption.ops import encrypt
from cloudp2p.encryption.scheduling import Scheduler, estimate_work
from cloudp2p.encryption.service import EncryptionEngine
from cloudp2p.membership.load import LoadMeter
from cloudp2p.ops import BUSY, Busy, RequestContext, is_busy

from .test_ops import CLIENT, FakeServer, FakeTransfers, call, done, fake_auth, fake_seal_job

MB = 1_000_000


def test_work_is_the_cover_array_a_job_writes():
    assert estimate_work(1 * MB) == 8 * MB  # one sample per hidden bit
    assert estimate_work(10) == scheduling.MIN_WORK  # the smallest library cover
    assert estimate_work(100_000, 5 * MB) == 50 * MB  # a supplied cover decodes to ~10x its file


def test_small_jobs_go_before_big_ones_admitted_a_little_earlier_but_not_for_ever():
    clock = task.Clock()
    s = Scheduler(clock, workers=2)
    big = s.admit(36 * MB, may_refuse=False)  # 12 MP
    clock.advance(0.5)
    small = s.admit(estimate_work(50_000), may_refuse=False)
    assert small.priority < big.priority
    clock.advance(2.0)  # the big one has waited its cost / ageing_rate: newcomers go after it
    late = s.admit(estimate_work(50_000), may_refuse=False)
    assert big.priority < late.priority


def test_arrival_order_when_ageing_is_off():
    clock = task.Clock()
    s = Scheduler(clock, workers=1, ageing_rate=float("inf"))
    big = s.admit(36 * MB, may_refuse=False)
    clock.advance(0.01)
    assert big.priority < s.admit(1, may_refuse=False).priority


def test_busy_when_the_work_ahead_is_long_but_small_jobs_and_forced_jobs_still_get_in():
    clock = task.Clock()
    s = Scheduler(clock, workers=2, busy_after=1.0, rate_source=lambda: 10 * MB)  # 20 MB/s in all
    huge = s.admit(400 * MB, may_refuse=True)  # an idle server takes even a huge job
    assert s.admit(8 * MB, may_refuse=True)  # smaller: it would go first, no wait
    huge.started()  # ... until a worker has taken the huge one: it is never pre-empted
    with pytest.raises(Busy) as info:
        s.admit(8 * MB, may_refuse=True)  # behind ~10 s of work (half of the running job)
    assert info.value.code == BUSY and "another server" in info.value.message
    assert s.refused == 1
    s2 = Scheduler(clock, workers=2, busy_after=1.0, rate_source=lambda: 10 * MB)
    tickets = [s2.admit(8 * MB, may_refuse=True) for _ in range(3)]  # 1 MB photos: 0.4 s each
    with pytest.raises(Busy):
        s2.admit(8 * MB, may_refuse=True)  # a fourth would wait 1.2 s
    small = s2.admit(estimate_work(50_000), may_refuse=True)  # ordered before them: no wait
    assert small.priority < min(t.priority for t in tickets)
    forced = s2.admit(8 * MB, may_refuse=False)  # every server refused: this one queues it
    assert s2.admitted == 5
    for t in (*tickets, small, forced):
        s2.release(t)
    assert s2.admitted == 0 and s2.backlog_bytes == 0 and s2.backlog_seconds() == 0


def test_backlog_uses_the_measured_rate_and_feeds_the_load():
    clock = task.Clock()
    rate = [None]
    s = Scheduler(clock, workers=2, rate_source=lambda: rate[0])
    s.admit(int(scheduling.DEFAULT_RATE), may_refuse=False)
    assert s.backlog_seconds() == pytest.approx(0.5)  # default rate until jobs are measured
    rate[0] = scheduling.DEFAULT_RATE / 4
    assert s.backlog_seconds() == pytest.approx(2.0)
    meter = LoadMeter(inflight=lambda: 2, cpu=lambda: 0.5, backlog=s.backlog_seconds)
    assert meter.current() == pytest.approx(0.5 + 0.25 * 2 + 2.0)
    assert LoadMeter(inflight=lambda: 0, cpu=lambda: 0.0, backlog=lambda: float("nan")).current() == 0.0
    with pytest.raises(ValueError):
        LoadMeter(inflight=lambda: 0, backlog_weight=-1)
    assert s.status()["admitted"] == 1 and s.status()["backlog_bytes"] == int(scheduling.DEFAULT_RATE)


def test_is_busy_reads_reply_bodies():
    assert is_busy(Busy("x").to_reply())
    assert not is_busy({"ok": True, "result": {"error": {"code": BUSY}}})
    assert not is_busy({"ok": False, "error": {"code": "invalid_image"}})
    assert not is_busy({"ok": False, "error": "busy"})


# -- the encrypt op --------------------------------------------------------------------------------


def engine_with(clock, run_job, **kw) -> FakeServer:
    settings = EncryptionSettings(fetch_timeout=5, **kw)
    engine = EncryptionEngine(clock, settings, run_job=run_job, authenticate=fake_auth)
    return FakeServer(clock, FakeTransfers(), engine)


def call_refusable(server, args, request_id):
    ctx = RequestContext(request_id=request_id, op="encrypt", client=CLIENT, server=server, may_refuse=True)
    out = []
    defer.ensureDeferred(encrypt(ctx, args)).addBoth(out.append)
    return out


def test_a_saturated_server_refuses_before_fetching_and_a_forced_one_queues():
    clock = task.Clock()
    held: list[defer.Deferred] = []

    def run_job(fn, *args, priority=None, cost=0, on_start=None):
        d = defer.Deferred()
        held.append((d, args))
        if len(held) <= 2:  # two workers take the first two
            on_start()
        return d

    server = engine_with(clock, run_job, busy_after=0.3)
    photo = b"IMG" + os.urandom(2 * MB)  # 16 MB of work: 0.13 s at the default rate with 2 workers
    running = []
    for i in range(4):
        image = server.transfers.client_offer(photo, 41000 + i)
        running.append(call(server, {"token": "good-token", "image": image, "cover": None}, f"r{i}")[0])
    assert server.encryption.scheduler.admitted == 4
    # Ahead of a fifth: half of the two running (16 MB) and the two waiting (32 MB): 0.4 s > 0.3 s.
    image = server.transfers.client_offer(photo, 42000)
    fetched_before = len(server.transfers.fetched)
    refused = call_refusable(server, {"token": "good-token", "image": image, "cover": None}, "late")
    assert isinstance(refused[0], Failure) and refused[0].check(Busy)
    assert len(server.transfers.fetched) == fetched_before  # refused before any byte was fetched
    assert server.encryption.scheduler.admitted == 4  # and it left nothing admitted
    small = server.transfers.client_offer(b"IMG" + os.urandom(30_000), 43000)
    call_refusable(server, {"token": "good-token", "image": small, "cover": None}, "small")
    assert server.encryption.scheduler.admitted == 5  # a small job is ordered first: no wait, admitted
    # Tickets are released however the request ends: here every job finishes.
    for d, args in held:
        d.callback(fake_seal_job(*args))
    assert all(done(out) for out in running)
    assert server.encryption.scheduler.admitted == 0


def test_a_failed_request_releases_its_ticket():
    clock = task.Clock()
    server = engine_with(clock, lambda fn, *a, **kw: defer.maybeDeferred(fake_seal_job, *a))
    image = server.transfers.client_offer(b"IMG" + os.urandom(100), 41000)
    out, _ = call(server, {"token": "bad-token", "image": image, "cover": None})
    assert isinstance(out[0], Failure) and out[0].value.code == "not_signed_in"
    missing = dict(image, transfer_id="0" * 32)
    out, _ = call(server, {"token": "good-token", "image": missing, "cover": None})
    assert isinstance(out[0], Failure)
    assert server.encryption.scheduler.admitted == 0 and server.encryption.backlog_seconds() == 0


def test_the_pool_gets_the_tickets_priority_and_cost():
    clock = task.Clock()
    seen = []

    def run_job(fn, *args, priority=None, cost=0, on_start=None):
        seen.append((priority, cost))
        return defer.maybeDeferred(fake_seal_job, *args)

    server = engine_with(clock, run_job)
    clock.advance(100)
    image = server.transfers.client_offer(b"IMG" + os.urandom(MB), 41000)
    done(call(server, {"token": "good-token", "image": image, "cover": None})[0])
    ((priority, cost),) = seen
    assert cost == estimate_work(MB + 3) and priority == pytest.approx(
        100 + cost / scheduling.DEFAULT_AGEING_RATE
    )


def test_arrival_order_config_is_first_come_first_served_and_never_busy():
    clock = task.Clock()
    arrival = Schema((EncryptionSettings.SECTION,)).validate({"encryption": {"queue_order": "arrival"}})
    engine = EncryptionEngine(clock, arrival["encryption"], run_job=lambda *a, **k: None)
    tickets = [engine.admit(50 * MB, None, may_refuse=True) for _ in range(20)]
    assert [t.priority for t in tickets] == sorted(t.priority for t in tickets)
    assert engine.scheduler.refused == 0
    default = EncryptionEngine(clock, EncryptionSettings(), run_job=lambda *a, **k: None)
    assert default.queue_order == "smallest_first" and default.scheduler.busy_after == 1.0
