"""gateway.monitor and a user's typing profile: when a session may enrol one or learn into it, and how a flood of
queued input is scored. Against a small in-process gateway (the monitor's collaborators only): the store is the real
memory store with a switch for an outage at a chosen call, which a whole Gateway cannot inject; the policy set is a
stand-in that allows everything, so that no decision interferes with what is stored. Learning through a real Gateway
is in test_monitor_gateway.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import types

import numpy as np
import pytest

import scoring
from gateway import monitor as monitor_module
from gateway.monitor import Monitor
from gateway.store import SessionRecord, StoreUnavailable
from gateway.store.memory import MemoryStore
from scoring.events import MAX_BATCH, Kind, Source, concat, make_batch

EPOCH0 = 1.7e12


def typing(n, seed, t0=0.0, dwell=100.0, flight=170.0, arrival=None):
    rng = np.random.default_rng(seed)
    cls = rng.integers(1, 8, n).astype(np.uint8)
    downs = t0 + np.cumsum(rng.lognormal(np.log(flight), 0.4, n))
    ups = downs + rng.lognormal(np.log(dwell), 0.25, n)
    arr_d = downs + EPOCH0 if arrival is None else np.full(n, arrival)
    arr_u = ups + EPOCH0 if arrival is None else np.full(n, arrival)
    b = concat([make_batch(downs, arr_d, Kind.KEY_DOWN, key=cls, source=Source.SENSOR),
                make_batch(ups, arr_u, Kind.KEY_UP, key=cls, source=Source.SENSOR)])
    return b[np.argsort(b["t_src"], kind="stable")]


class FlakyStore(MemoryStore):
    def __init__(self):
        super().__init__()
        self.down = False
        self.writes: list[str] = []

    async def get_profile(self, user):
        if self.down:
            raise StoreUnavailable("down")
        return await super().get_profile(user)

    async def put_profile(self, user, blob):
        self.writes.append("put")
        await super().put_profile(user, blob)

    async def create_profile(self, user, blob):
        self.writes.append("create")
        return await super().create_profile(user, blob)


class Telemetry:
    def __init__(self):
        self.counts: dict[str, float] = {}

    def count(self, name, value=1, **labels):
        self.counts[name] = self.counts.get(name, 0) + value

    def __getattr__(self, name):
        return lambda *a, **k: None

    class tracing:
        @staticmethod
        @contextlib.contextmanager
        def root(*a, **k):
            yield


class Gateway:
    def __init__(self, enrol_keystrokes=200):
        self.telemetry = Telemetry()
        self.store = FlakyStore()
        self.records: dict[str, SessionRecord] = {}
        self.sessions = types.SimpleNamespace(get=self._get, cached=self.records.get)
        decision = types.SimpleNamespace(action=0, shadow_decisions=[], errors=[])
        self.policies = types.SimpleNamespace(current=types.SimpleNamespace(
            expectations=lambda ctx: None, evaluate=lambda ctx, near_misses=False: decision))
        self.config = types.SimpleNamespace(
            scoring=types.SimpleNamespace(learn=True, enrol_keystrokes=enrol_keystrokes),
            session=types.SimpleNamespace(max_lifetime=3600))
        self.errors: list[str] = []
        self.tasks: list[asyncio.Task] = []
        self.monitor = Monitor(self)

    async def _get(self, sid):
        return self.records.get(sid)

    def new_integrity(self):
        return None

    def route_named(self, name):
        return None

    def spawn(self, coro, name):
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(lambda t: t.cancelled() or t.exception() is None
                               or self.errors.append(repr(t.exception())))
        self.tasks.append(task)
        return task

    def add(self, sid, user):
        self.records[sid] = SessionRecord(sid=sid, sub=user)

    async def settle(self):
        for _ in range(5):
            await asyncio.sleep(0)
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


def _victim_blob() -> bytes:
    return scoring.enrol_session([typing(1500, seed=1, t0=EPOCH0)]).to_bytes()


async def _type(gw, sid, events, size=100):
    for i in range(0, len(events), size):
        await gw.monitor.ingest(sid, events[i : i + size])
    await gw.settle()


def _impostor(n=260, seed=8):
    now = time.time() * 1000.0
    return typing(n, seed, t0=now - 200_000, dwell=60, flight=260, arrival=now)


async def test_store_down_at_session_start_never_enrols_over_the_profile(caplog):
    gw = Gateway()
    gw.add("s1", "alice")
    victim = _victim_blob()
    await gw.store.put_profile("alice", victim)
    gw.store.writes.clear()
    gw.store.down = True
    with caplog.at_level(logging.WARNING, logger="ztgate.monitor"):
        await gw.monitor.start_session("s1")
    gw.store.down = False  # back before the impostor has typed enough to enrol
    assert "without enrolment or learning" in caplog.text
    await _type(gw, "s1", _impostor())
    await gw.monitor.end("s1", clean=True)
    assert gw.store.writes == [] and await gw.store.get_profile("alice") == victim and not gw.errors


@pytest.mark.parametrize("stored", [
    b"ZTPF" + b"\x00" * 40,  # corrupt
    _victim_blob()[:-4] + b"\x00\x00\x80\x7f",  # a finite-looking profile with an infinite trailer
])
async def test_an_unreadable_profile_is_never_overwritten(stored):
    gw = Gateway()
    gw.add("s1", "alice")
    await gw.store.put_profile("alice", stored)
    gw.store.writes.clear()
    await _type(gw, "s1", _impostor())
    await gw.monitor.end("s1", clean=True)
    assert gw.store.writes == [] and await gw.store.get_profile("alice") == stored


async def test_a_user_without_a_profile_enrols_once():
    gw = Gateway()
    gw.add("s1", "bob")
    now = time.time() * 1000.0
    await _type(gw, "s1", typing(400, 3, t0=now - 200_000, arrival=now), size=50)
    assert gw.store.writes == ["create"]
    enrolled = scoring.Profile.from_bytes(await gw.store.get_profile("bob"))
    assert enrolled.keystrokes >= 190 and gw.monitor.entry("s1").profile is not None


async def test_enrolment_does_not_replace_a_profile_that_appeared_meanwhile():
    gw = Gateway()
    gw.add("s1", "carol")
    await gw.monitor.start_session("s1")  # the store says: no profile
    imported = _victim_blob()
    await gw.store.put_profile("carol", imported)  # an admin imports one while the session runs
    await _type(gw, "s1", _impostor())
    assert "create" in gw.store.writes
    assert await gw.store.get_profile("carol") == imported
    assert gw.monitor.entry("s1").profile is None


async def test_learning_needs_a_judged_genuine_session():
    gw = Gateway()
    victim = _victim_blob()
    await gw.store.put_profile("dave", victim)
    gw.store.writes.clear()
    now = time.time() * 1000.0
    unflagged = 0
    for seed in range(101, 111):  # 21 keystrokes of someone else: too short to be judged, and mostly not flagged
        gw.add(f"short{seed}", "dave")
        await _type(gw, f"short{seed}", typing(21, seed, t0=now - 200_000, dwell=60, flight=260, arrival=now), size=8)
        unflagged += not gw.monitor.entry(f"short{seed}").scorer.flagged
        await gw.monitor.end(f"short{seed}", clean=True)
    assert unflagged >= 3
    assert gw.store.writes == [] and await gw.store.get_profile("dave") == victim
    gw.add("genuine", "dave")
    await _type(gw, "genuine", typing(300, 9000, t0=now - 200_000, arrival=now), size=8)
    await gw.monitor.end("genuine", clean=True)
    assert gw.store.writes == ["put"]
    assert scoring.Profile.from_bytes(await gw.store.get_profile("dave")).sessions == 2


def _pointer_moves(n, t0, arrival):
    t = t0 + np.arange(n, dtype=np.float64)
    return make_batch(t, np.full(n, arrival), Kind.POINTER_MOVE, source=Source.SENSOR, x=t % 500, y=t % 300)


async def test_a_flush_over_max_batch_is_scored_in_chunks():
    gw = Gateway()
    gw.add("s1", "erin")
    await gw.store.put_profile("erin", _victim_blob())
    now = time.time() * 1000.0
    origin = now - 60_000
    for m in range(9):  # nine 512-event sensor messages inside one flush window: 4608 + keys > MAX_BATCH
        gw.monitor.submit("s1", _pointer_moves(512, origin + 1000 + 600 * m, now))
    gw.monitor.submit("s1", typing(40, 3, t0=origin + 7000, arrival=now))
    await asyncio.sleep(monitor_module._FLUSH_AFTER * 3)
    await gw.settle()
    entry = gw.monitor.entry("s1")
    assert not gw.errors
    assert entry is not None and entry.assessment is not None
    assert entry.assessment.evidence.keystrokes == 40


async def test_the_queue_of_one_session_is_bounded_and_the_excess_counted():
    gw = Gateway()
    gw.add("s1", "frank")
    now = time.time() * 1000.0
    total = monitor_module._PENDING_MAX_EVENTS + 3000  # in messages of 1000: 616 more
    scored = []
    real_update = scoring.SessionScorer.update

    def update(self, batch):
        scored.append(len(batch))
        return real_update(self, batch)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scoring.SessionScorer, "update", update)
        for start in range(0, total, 1000):
            gw.monitor.submit("s1", _pointer_moves(1000, now - 50_000 + start, now))
        await asyncio.sleep(monitor_module._FLUSH_AFTER * 3)
        await gw.settle()
    assert not gw.errors
    assert sum(scored) == monitor_module._PENDING_MAX_EVENTS and max(scored) <= MAX_BATCH
    assert gw.telemetry.counts["ztgate_events_overflow_total"] == 20 * 1000 - monitor_module._PENDING_MAX_EVENTS
