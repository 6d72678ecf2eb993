"""Sessions.get_cached and touch_due, the proxy's per-request shortcuts, answer what get() and touch() would:
get_cached gives get()'s answer or NOT_CACHED (never another answer), touch_due says whether touch() writes. A
memory store and a fake clock; no timing."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from gateway.config import loads
from gateway.sessions import NOT_CACHED, Identity, Sessions
from gateway.store import open_store
from gateway.store.base import StoreUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def _sessions(tmp_path) -> tuple[Sessions, Clock]:
    cfg = loads(textwrap.dedent(f"""
        instance: t
        state_dir: {tmp_path}
        listeners: [{{address: "127.0.0.1:18999"}}]
        routes: [{{name: app, upstream: "http://127.0.0.1:9"}}]
        store: {{url: "memory://", cache_seconds: 2}}
        """), file="t.yaml", env={})
    store = open_store("memory://")
    await store.start()
    clock = Clock()
    sessions = Sessions(store, cfg.session, cfg.store, clock=clock)
    await sessions.start()
    return sessions, clock


def _view(record):
    return None if record is None else record.to_dict()


async def _agree(sessions: Sessions, sid: str) -> bool:
    """get_cached agrees with get(); True when it answered (no store needed)."""
    fast = sessions.get_cached(sid)
    slow = await sessions.get(sid)
    if fast is NOT_CACHED:
        return False
    assert _view(fast) == _view(slow)
    return True


async def test_get_cached_answers_as_get_or_not_at_all(tmp_path):
    sessions, clock = await _sessions(tmp_path)
    record = await sessions.create(Identity(sub="alice"), client_ip="10.0.0.1", user_agent="ua", route="app")
    assert await _agree(sessions, record.sid)  # just written: a fresh view
    assert not await _agree(sessions, "unknown")
    clock.now += 3  # older than cache_seconds: the store is asked
    assert not await _agree(sessions, record.sid)
    assert await _agree(sessions, record.sid)  # get() refreshed the view
    sessions._channel_live = False  # the broadcast channel is down: a view may miss a termination
    assert not await _agree(sessions, record.sid)
    sessions._channel_live = True
    await sessions.terminate(record.sid, "test")
    assert await _agree(sessions, record.sid)  # the tombstone answers
    assert sessions.get_cached(record.sid).terminated
    sessions._cache.clear()  # a tombstone without a cached view
    assert await _agree(sessions, record.sid)


async def test_touch_due_says_whether_touch_writes(tmp_path):
    sessions, clock = await _sessions(tmp_path)
    record = await sessions.create(Identity(sub="bob"), client_ip="10.0.0.1", user_agent="ua", route="app")
    for step, client_ip in ((1.0, "10.0.0.1"), (29.0, "10.0.0.1"), (0.5, "10.0.0.2"), (0.5, "10.0.0.2"),
                            (31.0, "10.0.0.2"), (0.0, "10.0.0.2")):
        clock.now += step
        due = sessions.touch_due(record, client_ip)
        before = (record.last_seen, record.client_ip)
        await sessions.touch(record, client_ip)
        assert due == ((record.last_seen, record.client_ip) != before), (step, client_ip)


class _FlakyMemoryStore:
    """The memory store with an outage switch: Redis cannot be made to fail on cue here, and what is tested is how
    Sessions answers a StoreUnavailable, not the store."""

    def __init__(self, store) -> None:
        self._store, self.down = store, False

    def __getattr__(self, name):
        attr = getattr(self._store, name)
        if not callable(attr) or name == "subscribe":
            return attr

        async def call(*args, **kwargs):
            if self.down:
                raise StoreUnavailable("outage")
            return await attr(*args, **kwargs)

        return call


async def test_a_resync_during_an_outage_keeps_serving_last_views_in_open_mode(tmp_path):
    # a store that flaps: the broadcast channel comes back for a moment (a resync, which forgets the views), then the
    # store is gone again. fail_mode open serves the last view, as it would have without the resync; closed refuses
    for mode in ("open", "closed"):
        sessions, clock = await _sessions(tmp_path)
        flaky = _FlakyMemoryStore(sessions.store)
        sessions.store = flaky
        sessions.store_cfg = dataclasses.replace(sessions.store_cfg, fail_mode=mode)
        record = await sessions.create(Identity(sub="alice"), client_ip="10.0.0.1", user_agent="ua", route="app")
        gone = await sessions.create(Identity(sub="bob"), client_ip="10.0.0.2", user_agent="ua", route="app")
        await sessions.terminate(gone.sid, "test")
        flaky.down = True
        await sessions._on_broadcast({"type": "disconnected"})
        await sessions._on_broadcast({"type": "resync"})
        clock.now += 3  # past cache_seconds as well
        if mode == "open":
            assert (await sessions.get(record.sid)).sid == record.sid
        else:
            with pytest.raises(StoreUnavailable):
                await sessions.get(record.sid)
        assert (await sessions.get(gone.sid)).terminated  # the tombstone still answers first
        flaky.down = False  # back: the store's answer, not the last view, from now on
        await sessions.terminate(record.sid, "elsewhere")
        sessions._cache.clear()
        sessions._tombstones.clear()
        flaky.down = True
        with pytest.raises(StoreUnavailable):  # the last view went when the store answered again
            await sessions.get(record.sid)
