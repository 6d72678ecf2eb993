"""A session that starts while Redis is down is scored without the user's typing profile; the monitor reads the
profile again on a later input flush, on a backoff (not on every flush), until the store answers, and the session
then goes on against it: the typing so far is judged, nothing the scorer had flagged is forgotten, and learning or
enrolment are possible again on the usual terms. An unreadable profile is never retried.

Against a real redis-server of the test's own, stopped (data kept) and started again, and a Gateway in the test's
process with the shipped policies. The monitor's clock is the test's: the backoff is checked by stepping it, with no
waiting and no timing threshold."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import textwrap
import time
import uuid

import numpy as np
import pytest

import scoring
from gateway import monitor as monitor_module
from gateway.sessions import Identity
from scoring.events import Kind, Source, concat, make_batch
from tests.support.inprocess import memory_gateway
from tests.support.processes import run_redis, shadow_default_policies

pytestmark = pytest.mark.slow

FIRST = monitor_module._PROFILE_RETRY_FIRST


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Keyboard:
    """Key events as the sensor reports them, on one source clock: each call goes on where the last one stopped
    (the scorer refuses input older than what it has). Defaults: the rhythm the profile below was enrolled from."""

    def __init__(self) -> None:
        self.t = time.time() * 1000.0 - 3_600_000

    def type(self, n: int, seed: int, *, dwell: float = 100.0, flight: float = 170.0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        cls = rng.integers(1, 8, n).astype(np.uint8)
        downs = self.t + np.cumsum(rng.lognormal(np.log(flight), 0.4, n))
        ups = downs + rng.lognormal(np.log(dwell), 0.25, n)
        self.t = float(ups.max()) + 2_000.0
        now = time.time() * 1000.0
        b = concat([make_batch(downs, now, Kind.KEY_DOWN, key=cls, source=Source.SENSOR),
                    make_batch(ups, now, Kind.KEY_UP, key=cls, source=Source.SENSOR)])
        return b[np.argsort(b["t_src"], kind="stable")]

    def script(self, n: int) -> np.ndarray:
        """Keys at an exact rhythm and dwell: what an injecting script produces (automation flags it)."""
        downs = self.t + 100.0 * np.arange(1, n + 1)
        self.t = float(downs[-1]) + 2_000.0
        now = time.time() * 1000.0
        cls = np.full(n, 3, dtype=np.uint8)
        b = concat([make_batch(downs, now, Kind.KEY_DOWN, key=cls, source=Source.SENSOR),
                    make_batch(downs + 30.0, now, Kind.KEY_UP, key=cls, source=Source.SENSOR)])
        return b[np.argsort(b["t_src"], kind="stable")]


def enrolled_profile() -> scoring.Profile:
    return scoring.enrol_session([Keyboard().type(1500, seed=1)])


class Scene:
    """A Gateway on its own Redis (shipped policies unless `policies`), a session per user created while the store
    was up, and the monitor on the test's clock."""

    def __init__(self, tmp_path, redis, policies=None) -> None:
        self.redis = redis
        self.gw = memory_gateway(tmp_path, textwrap.dedent(f"""
            instance: t
            listeners: [{{address: "127.0.0.1:18080"}}]
            routes:
              - {{name: app, upstream: "http://127.0.0.1:9000", audience: app}}
            store: {{url: "{redis.url}", prefix: "retry-{uuid.uuid4().hex[:8]}:", cache_seconds: 600,
                     fail_mode: open}}
            """), policies=policies)
        self.clock = Clock()
        self.gw.monitor.clock = self.clock
        self.keyboard = Keyboard()

    async def session(self, user: str) -> str:
        record = await self.gw.sessions.create(Identity(sub=user), client_ip="127.0.0.1", user_agent="ua", route="app")
        return record.sid

    async def type(self, sid: str, events: np.ndarray, size: int = 40) -> None:
        for i in range(0, len(events), size):
            await self.gw.monitor.ingest(sid, events[i : i + size])

    async def stored_profile(self, user: str) -> bytes | None:
        return await self.gw.store.get_profile(user)

    async def settle(self) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        pending = [t for t in asyncio.all_tasks() if t.get_name().startswith("ztgate-") and not t.done()]
        await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        # what is still pending (a step-up waiting out its grace period) is of no interest once the test has decided
        pending = [t for t in asyncio.all_tasks() if t.get_name().startswith("ztgate-") and not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.gw.store.close()


async def test_the_profile_is_read_again_on_a_backoff_once_the_store_returns(tmp_path):
    with run_redis(tmp_path) as redis:
        scene = Scene(tmp_path, redis)
        keys = scene.keyboard
        try:
            profile = enrolled_profile()
            await scene.gw.store.put_profile("ann", profile.to_bytes())
            sid = await scene.session("ann")
            redis.stop(keep_data=True)

            entry = await scene.gw.monitor.live(sid)  # the session starts during the outage
            assert entry.profile is None and not entry.learning and entry.profile_retry is not None
            await scene.type(sid, keys.type(120, 5))
            assert not entry.assessment.signals["cadence"].sufficient  # nothing to judge against
            typed_before = entry.assessment.evidence.keystrokes

            scene.clock.now += FIRST  # due: read; the store is still down, so the next read waits twice as long
            await scene.type(sid, keys.type(2, 6))
            assert entry.profile is None and entry.profile_retry.delay == 2 * FIRST

            redis.start()
            scene.clock.now += 2 * FIRST - 0.5  # the store is back, but the next read is not due
            for seed in range(7, 12):  # flushes keep coming: none of them reads
                await scene.type(sid, keys.type(2, seed))
            assert entry.profile is None and not entry.learning

            scene.clock.now += 0.5
            await scene.type(sid, keys.type(2, 12))
            assert entry.profile is not None and entry.scorer.profile is entry.profile
            assert entry.profile_retry is None and entry.learning  # the store has answered: the usual rules apply
            cadence = entry.assessment.signals["cadence"]
            # the typing from before the profile came was judged against it, not discarded: more observations than
            # the last flush alone could give (dwells and flights of every key so far)
            assert cadence.sufficient and cadence.details["observations"] >= typed_before
            assert cadence.score < 0.5 and not entry.scorer.flagged

            # a genuine, judged, calm session learns into the profile, as any other would
            await scene.type(sid, keys.type(60, 13))
            await scene.gw.monitor.end(sid, clean=True)
            learned = scoring.Profile.from_bytes(await scene.stored_profile("ann"))
            assert learned.sessions == profile.sessions + 1
        finally:
            await scene.close()


async def test_typing_from_before_the_profile_came_is_judged_and_steps_up_at_once(tmp_path):
    with run_redis(tmp_path) as redis:
        scene = Scene(tmp_path, redis)
        keys = scene.keyboard
        try:
            profile = enrolled_profile()
            await scene.gw.store.put_profile("bob", profile.to_bytes())
            sid = await scene.session("bob")
            redis.stop(keep_data=True)
            entry = await scene.gw.monitor.live(sid)
            await scene.type(sid, keys.type(200, 8, dwell=60, flight=260))  # someone else's rhythm, unjudged so far
            assert not entry.scorer.flagged and (await scene.gw.sessions.get(sid)).state == "active"

            redis.start()
            scene.clock.now += FIRST
            await scene.gw.monitor.ingest(sid, keys.type(1, 9))  # one key: what decides is the typing before it
            cadence = entry.assessment.signals["cadence"]
            assert entry.profile is not None and cadence.sufficient and cadence.score >= 0.5 and entry.scorer.flagged
            # the policies decide on it at once (the shipped rule's step-up then waits out its 5 s grace)
            record = await scene.gw.sessions.get(sid)
            decision = scene.gw.monitor.evaluate_policies(scene.gw.monitor.context(record, entry)).to_dict()
            assert (decision["action"], decision["rule_id"]) == ("step_up", "impostor-typing")
            await scene.gw.monitor.end(sid, clean=True)
            assert await scene.stored_profile("bob") == profile.to_bytes()
        finally:
            await scene.close()


async def test_a_session_flagged_before_its_profile_came_stays_flagged_and_never_trains_it(tmp_path):
    # policies in shadow: the script's input would otherwise end the session before the store returns
    with run_redis(tmp_path) as redis:
        scene = Scene(tmp_path, redis, policies=shadow_default_policies(tmp_path / "shadow"))
        keys = scene.keyboard
        try:
            profile = enrolled_profile()
            await scene.gw.store.put_profile("cid", profile.to_bytes())
            sid = await scene.session("cid")
            redis.stop(keep_data=True)
            entry = await scene.gw.monitor.live(sid)
            await scene.type(sid, keys.script(120))
            automation = entry.assessment.signals["automation"]
            assert entry.scorer.flagged and automation.sufficient and automation.score >= 0.95

            redis.start()
            scene.clock.now += FIRST
            await scene.type(sid, keys.type(150, 21))  # then someone types like the user
            assert entry.profile is not None and entry.learning and entry.scorer.flagged
            assert entry.assessment.signals["cadence"].sufficient
            assert entry.assessment.signals["automation"].score >= 0.95  # its evidence was not thrown away
            await scene.gw.monitor.end(sid, clean=True)
            assert await scene.stored_profile("cid") == profile.to_bytes()
        finally:
            await scene.close()


async def test_typing_the_profile_never_judged_does_not_train_it(tmp_path):
    # more typing during the outage than the scorer holds for a late profile (cadence.HELD_OBSERVATIONS): the
    # oldest was never judged against the profile, so even a calm session must not teach it
    with run_redis(tmp_path) as redis:
        scene = Scene(tmp_path, redis)
        keys = scene.keyboard
        try:
            profile = enrolled_profile()
            await scene.gw.store.put_profile("dora", profile.to_bytes())
            sid = await scene.session("dora")
            redis.stop(keep_data=True)
            entry = await scene.gw.monitor.live(sid)
            await scene.type(sid, keys.type(700, 51), size=100)
            redis.start()
            scene.clock.now += FIRST
            await scene.type(sid, keys.type(100, 52))
            assert entry.profile is not None and not entry.learning
            assert entry.assessment.signals["cadence"].sufficient and not entry.scorer.flagged
            await scene.gw.monitor.end(sid, clean=True)
            assert await scene.stored_profile("dora") == profile.to_bytes()
        finally:
            await scene.close()


async def test_typing_a_step_up_answered_before_the_profile_came_is_not_judged_again_nor_learned(tmp_path):
    with run_redis(tmp_path) as redis:
        scene = Scene(tmp_path, redis)
        keys = scene.keyboard
        try:
            profile = enrolled_profile()
            await scene.gw.store.put_profile("fay", profile.to_bytes())
            sid = await scene.session("fay")
            redis.stop(keep_data=True)
            entry = await scene.gw.monitor.live(sid)
            await scene.type(sid, keys.type(150, 61, dwell=60, flight=260))  # someone else's rhythm...
            await scene.gw.monitor.reset_evidence(sid)  # ... answered by a passed step-up during the outage
            redis.start()
            scene.clock.now += FIRST
            await scene.type(sid, keys.type(30, 62))
            cadence = entry.assessment.signals["cadence"]
            assert entry.profile is not None and cadence.score < 0.5 and not entry.scorer.flagged
            assert cadence.details["observations"] < 150  # only what was typed after the step-up was judged
            assert not entry.learning  # what was typed before it was never judged against the profile
            await scene.gw.monitor.end(sid, clean=True)
            assert await scene.stored_profile("fay") == profile.to_bytes()
        finally:
            await scene.close()


async def test_a_user_without_a_profile_may_enrol_once_the_store_has_said_so(tmp_path):
    with run_redis(tmp_path) as redis:
        scene = Scene(tmp_path, redis)
        scene.gw.config = dataclasses.replace(
            scene.gw.config, scoring=dataclasses.replace(scene.gw.config.scoring, enrol_keystrokes=150))
        keys = scene.keyboard
        try:
            sid = await scene.session("dan")
            redis.stop(keep_data=True)
            entry = await scene.gw.monitor.live(sid)
            await scene.type(sid, keys.type(200, 31))  # enough to enrol, but the store could not say there is none
            assert entry.enrol_keys == 0

            redis.start()
            scene.clock.now += FIRST
            await scene.type(sid, keys.type(2, 32))
            assert entry.profile_retry is None and entry.learning and entry.profile is None
            await scene.type(sid, keys.type(200, 33))  # enrolment collects from here on
            await scene.settle()
            assert await scene.stored_profile("dan") is not None
        finally:
            await scene.close()


async def test_an_unreadable_profile_is_not_retried_and_never_overwritten(tmp_path, caplog):
    with run_redis(tmp_path) as redis:
        scene = Scene(tmp_path, redis)
        keys = scene.keyboard
        try:
            corrupt = b"ZTPF" + b"\x00" * 40
            await scene.gw.store.put_profile("eve", corrupt)
            sid = await scene.session("eve")
            with caplog.at_level(logging.ERROR, logger="ztgate.monitor"):
                entry = await scene.gw.monitor.live(sid)
            assert "unreadable" in caplog.text
            assert entry.profile_retry is None and not entry.learning
            scene.clock.now += 10 * monitor_module._PROFILE_RETRY_MAX
            await scene.type(sid, keys.type(80, 41))
            assert entry.profile is None and entry.profile_retry is None
            await scene.gw.monitor.end(sid, clean=True)
            assert await scene.stored_profile("eve") == corrupt

            # the same profile met on a retry after an outage: logged as unreadable, then left alone
            sid = await scene.session("eve")
            redis.stop(keep_data=True)
            entry = await scene.gw.monitor.live(sid)
            assert entry.profile_retry is not None
            redis.start()
            scene.clock.now += FIRST
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="ztgate.monitor"):
                await scene.type(sid, keys.type(80, 42))
            assert "unreadable" in caplog.text
            assert entry.profile is None and entry.profile_retry is None and not entry.learning
            await scene.gw.monitor.end(sid, clean=True)
            assert await scene.stored_profile("eve") == corrupt
        finally:
            await scene.close()


# ---------------------------------------------------------------------------------------------- the scorer's part
# (scoring.SessionScorer.adopt_profile, which the monitor calls: kept here, beside the behaviour it serves)


def _scored(scorer: scoring.SessionScorer, events: np.ndarray, size: int = 40) -> scoring.SessionScorer:
    for i in range(0, len(events), size):
        scorer.update(events[i : i + size])
    return scorer


def test_a_late_profile_judges_the_typing_so_far_as_if_it_had_been_there():
    profile = enrolled_profile()
    for rhythm in ({}, {"dwell": 60.0, "flight": 260.0}):  # the user, someone else
        events = Keyboard().type(150, 71, **rhythm)
        from_start = _scored(scoring.SessionScorer(profile), events)
        late = _scored(scoring.SessionScorer(None), events)
        assert late.adopt_profile(profile) == 0
        a, b = from_start.assess().signals["cadence"], late.assess().signals["cadence"]
        assert b.sufficient and b.details["observations"] == a.details["observations"]
        assert b.details["evidence_level"] == pytest.approx(a.details["evidence_level"], rel=1e-9, abs=1e-9)
        assert b.score == pytest.approx(a.score, abs=1e-9) and late.flagged == from_start.flagged
        # judged one observation at a time: the peak is never lower than batch-by-batch judging recorded
        assert b.details["peak_level"] >= a.details["peak_level"] - 1e-9


def test_a_scorer_restored_without_its_hold_does_not_claim_its_typing_was_judged():
    scorer = _scored(scoring.SessionScorer(None), Keyboard().type(60, 72))
    restored = scoring.SessionScorer.from_bytes(scorer.to_bytes(), None)
    assert restored.adopt_profile(enrolled_profile()) > 0
    with pytest.raises(ValueError):
        restored.adopt_profile(enrolled_profile())  # one profile per session
