"""Session writes that never lose one another, on both stores (memory, and the real Redis): the store compares and sets
a record's version, a terminated record is final, and activity (last seen, client address) is written beside the
record, never as a whole record from an old view; Sessions re-reads and re-applies a change the store refused, and
never takes an older record over a newer view of its own.

Two Sessions on one store stand for two gateway processes; the second is "deaf" (not subscribed to broadcasts), so
that its view is as old as a process's is between another process's write and its broadcast: deterministic, no
timing."""

from __future__ import annotations

import asyncio
import random
import textwrap

import pytest

from gateway.config import loads
from gateway.sessions import Identity, Sessions
from gateway.store import SessionRecord, SessionState, StoreUnavailable, open_store


@pytest.fixture(params=["memory", "redis"])
async def stores(request, redis_url, redis_prefix):
    """Two clients of one store (two processes): the same object for memory, two connections for Redis."""
    if request.param == "memory":
        one = open_store("memory://")
        await one.start()
        yield one, one
        await one.close()
        return
    a, b = open_store(redis_url, prefix=redis_prefix), open_store(redis_url, prefix=redis_prefix)
    await a.start()
    await b.start()
    yield a, b
    import redis.asyncio as aioredis

    r = aioredis.from_url(redis_url)
    keys = [k async for k in r.scan_iter(f"{redis_prefix}*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()
    await a.close()
    await b.close()


@pytest.fixture
def store(stores):
    return stores[0]


# ------------------------------------------------------------------------------------------------- the stores


async def test_put_session_is_compare_and_set_on_the_version(store):
    assert await store.put_session(SessionRecord(sid="v", sub="ann", version=1), 60)
    assert not await store.put_session(SessionRecord(sid="v", sub="ann", state_reason="same version", version=1), 60)
    assert await store.put_session(SessionRecord(sid="v", sub="ann", state="step_up_required", version=2), 60)
    older = SessionRecord(sid="v", sub="ann", state="active", state_reason="an older view", version=1)
    assert not await store.put_session(older, 60)
    stored = await store.get_session("v")
    assert (stored.state, stored.version, stored.state_reason) == ("step_up_required", 2, "")
    assert [r.version for r in await store.list_sessions()] == [2]


async def test_a_terminated_record_is_final_even_as_terminated_again(store):
    ended = SessionRecord(sid="t", sub="bob", state="terminated", state_reason="policy", version=3,
                          decision={"rule_id": "impostor"})
    assert await store.put_session(ended, 60)
    for state in ("active", "terminated"):
        again = SessionRecord(sid="t", sub="bob", state=state, state_reason="admin", version=9,
                              decision={"rule_id": "admin:x"})
        assert not await store.put_session(again, 60)
    stored = await store.get_session("t")
    assert (stored.state, stored.state_reason, stored.decision, stored.version) == \
        ("terminated", "policy", {"rule_id": "impostor"}, 3)


async def test_touch_writes_activity_only_and_only_a_later_one(store):
    await store.put_session(SessionRecord(sid="a", sub="cat", state="step_up_required", version=2, last_seen=100.0,
                                          client_ip="10.0.0.1"), 60)
    assert await store.touch_session("a", 200.0, "10.0.0.2")
    got = await store.get_session("a")
    assert (got.state, got.version, got.last_seen, got.client_ip) == ("step_up_required", 2, 200.0, "10.0.0.2")
    assert not await store.touch_session("a", 150.0, "10.0.0.9")  # an earlier observation, arriving late
    # a record written with older activity (a writer's view from before the touch) keeps the later activity
    await store.put_session(SessionRecord(sid="a", sub="cat", state="restricted", version=3, last_seen=120.0,
                                          client_ip="10.0.0.1"), 60)
    got = await store.get_session("a")
    assert (got.state, got.last_seen, got.client_ip) == ("restricted", 200.0, "10.0.0.2")
    listed = {r.sid: r for r in await store.list_sessions()}["a"]
    assert (listed.last_seen, listed.client_ip) == (200.0, "10.0.0.2")
    # ... and one written with later activity shows its own
    await store.put_session(SessionRecord(sid="a", sub="cat", state="restricted", version=4, last_seen=300.0,
                                          client_ip="10.0.0.3"), 60)
    assert (await store.get_session("a")).client_ip == "10.0.0.3"
    # no session, no activity: a touch never creates a record
    assert not await store.touch_session("nobody", 500.0, "10.0.0.4")
    assert await store.get_session("nobody") is None
    # the activity goes with its session
    await store.delete_session("a")
    await store.put_session(SessionRecord(sid="a", sub="cat", version=1, last_seen=50.0, client_ip="10.0.0.5"), 60)
    got = await store.get_session("a")
    assert (got.last_seen, got.client_ip) == (50.0, "10.0.0.5")


# ------------------------------------------------------------------------------------------------- Sessions


def _config(tmp_path):
    # cached views count as fresh for a minute: a deaf process then works from its old view, as between another
    # process's write and its broadcast
    return loads(textwrap.dedent(f"""
        instance: t
        state_dir: {tmp_path}
        listeners: [{{address: "127.0.0.1:18999"}}]
        routes: [{{name: app, upstream: "http://127.0.0.1:9"}}]
        store: {{url: "memory://", cache_seconds: 60}}
        """), file="t.yaml", env={})


async def _pair(tmp_path, stores) -> tuple[Sessions, Sessions, str]:
    """(A, B, sid): A hears broadcasts, B does not; both have a view of the session at version 1."""
    cfg = _config(tmp_path)
    a, b = Sessions(stores[0], cfg.session, cfg.store), Sessions(stores[1], cfg.session, cfg.store)
    await a.start()
    record = await a.create(Identity(sub="dee"), client_ip="10.0.0.1", user_agent="ua", route="app")
    assert (await b.get(record.sid)).version == 1
    return a, b, record.sid


async def test_a_touch_from_an_old_view_never_undoes_a_step_up(tmp_path, stores):
    a, b, sid = await _pair(tmp_path, stores)
    old_view = b.cached(sid)
    await a.set_state(sid, SessionState.STEP_UP_REQUIRED, "impostor", step_up={"method": "totp"})
    assert b.touch_due(old_view, "10.0.0.2")  # the client's address changed: B notes it at once
    await b.touch(old_view, "10.0.0.2")
    stored = await stores[0].get_session(sid)
    assert (stored.state, stored.version, stored.step_up) == ("step_up_required", 2, {"method": "totp"})
    assert stored.client_ip == "10.0.0.2"  # the activity itself was noted


async def test_changes_from_old_views_are_all_kept(tmp_path, stores):
    a, b, sid = await _pair(tmp_path, stores)
    await a.update(sid, step_up={"method": "totp", "failures": 1})
    await b.update(sid, restrictions={"deny_methods": ["POST"]})  # from B's view of version 1: refused, re-applied
    stored = await stores[0].get_session(sid)
    assert stored.step_up == {"method": "totp", "failures": 1} and stored.restrictions == {"deny_methods": ["POST"]}
    assert stored.version == 3 and b.cached(sid).version == 3


async def test_counts_made_at_once_on_both_processes_all_count(tmp_path, stores):
    # many writers at once, in two processes and within each: every change counted once, none lost (a change made
    # here must never build on another one's write still in flight, which the store may yet refuse)
    a, b, sid = await _pair(tmp_path, stores)

    def one_more(current):
        return {"step_up": {**current.step_up, "failures": int(current.step_up.get("failures", 0)) + 1}}

    def mark(name):
        return lambda current: {"restrictions": {**current.restrictions, name: True}}

    changes = [(s, one_more) for _ in range(15) for s in (a, b)] + [(s, mark(f"{n}{i}")) for i in range(5)
                                                                    for n, s in (("a", a), ("b", b))]
    random.Random(3).shuffle(changes)
    await asyncio.gather(*(s.modify(sid, change) for s, change in changes))
    stored = await stores[0].get_session(sid)
    assert stored.step_up["failures"] == 30 and len(stored.restrictions) == 10 and stored.version == 41


async def test_a_decision_on_an_old_view_never_loosens_the_session(tmp_path, stores):
    a, b, sid = await _pair(tmp_path, stores)
    await a.set_state(sid, SessionState.STEP_UP_REQUIRED, "impostor")
    kept = await b.set_state(sid, SessionState.RESTRICTED, "relay suspected", restrictions={"deny_methods": ["POST"]})
    assert kept.state == "step_up_required" and kept.state_reason == "impostor"
    stored = await stores[0].get_session(sid)
    assert (stored.state, stored.restrictions, stored.version) == ("step_up_required", {}, 2)


async def test_ending_an_ended_session_again_writes_nothing(tmp_path, stores):
    a, b, sid = await _pair(tmp_path, stores)
    first = await a.terminate(sid, "impostor", decision={"rule_id": "impostor"})
    assert first.terminated and first.version == 2
    again = await b.terminate(sid, "from the dashboard", decision={"rule_id": "admin:x"})  # B still sees it active
    assert again.terminated and again.state_reason == "impostor"
    stored = await stores[0].get_session(sid)
    assert (stored.state_reason, stored.decision, stored.version) == ("impostor", {"rule_id": "impostor"}, 2)
    assert (await a.terminate(sid, "twice here")).state_reason == "impostor"
    assert (await stores[0].get_session(sid)).version == 2


class _Outage:
    """A store whose writes fail on cue (reads still answer): a write that did not reach the store."""

    def __init__(self, store) -> None:
        self._store, self.writes_fail = store, False

    def __getattr__(self, name):
        attr = getattr(self._store, name)
        if name not in ("put_session", "publish"):
            return attr

        async def call(*args, **kwargs):
            if self.writes_fail:
                raise StoreUnavailable("outage")
            return await attr(*args, **kwargs)

        return call


class _Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_an_older_record_from_the_store_never_replaces_a_newer_view(tmp_path, stores):
    cfg = _config(tmp_path)
    clock = _Clock()
    flaky = _Outage(stores[0])
    a = Sessions(flaky, cfg.session, cfg.store, clock=clock)
    await a.start()
    sid = (await a.create(Identity(sub="eve"), client_ip="10.0.0.1", user_agent="ua", route="app")).sid
    flaky.writes_fail = True
    with pytest.raises(StoreUnavailable):  # in force here, not in the store (written back on resync)
        await a.set_state(sid, SessionState.STEP_UP_REQUIRED, "impostor")
    flaky.writes_fail = False
    clock.now += 120  # the view is older than cache_seconds: the store is asked, and holds version 1
    got = await a.get(sid)
    assert (got.state, got.version) == ("step_up_required", 2)
    # a termination is final whatever its version: it replaces the newer view
    other = Sessions(stores[1], cfg.session, cfg.store, clock=clock)
    await other.terminate(sid, "elsewhere")
    clock.now += 120
    got = await a.get(sid)
    assert got.terminated and got.state_reason == "elsewhere"


async def test_an_admin_ending_an_ended_session_reports_nothing_again(tmp_path):
    from tests.support.inprocess import memory_gateway

    class Events:
        def __init__(self) -> None:
            self.logoffs: list[str] = []
            self.decisions: list[str] = []

        async def emit_decision(self, d, record, assessment, upstream):
            self.decisions.append(d["rule_id"])

        async def emit_logoff(self, record, reason):
            self.logoffs.append(record["sid"])

    gw = memory_gateway(tmp_path)
    gw.events = events = Events()
    record = await gw.sessions.create(Identity(sub="fay"), client_ip="10.0.0.1", user_agent="ua", route="app")
    first = await gw.enforcer.terminate(record.sid, "for cause", by="alice")
    again = await gw.enforcer.terminate(record.sid, "again", by="bob")
    assert first.state_reason == again.state_reason == "for cause"
    assert again.decision["rule_id"] == "admin:alice"
    assert events.logoffs == [record.sid] and events.decisions == ["admin:alice"]
