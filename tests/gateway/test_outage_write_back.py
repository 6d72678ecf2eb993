"""Step-ups and restrictions decided while Redis is down are in force in the deciding process at once, and are
written back when the store returns, unless the store already holds something stricter. A real redis-server of
the test's own is stopped (its data kept, like a network outage) and started again; the gateway's Sessions run
in-process against it, as two processes would: one decides during the outage, the other only reads the store."""

from __future__ import annotations

import asyncio
import textwrap
import time

import pytest

from gateway.config import loads
from gateway.sessions import Identity, Sessions
from gateway.store import SessionState, StoreUnavailable, open_store
from tests.support.processes import run_redis

pytestmark = pytest.mark.slow


def _config(tmp_path):
    return loads(textwrap.dedent(f"""
        instance: t
        state_dir: {tmp_path}
        listeners: [{{address: "127.0.0.1:18999"}}]
        routes: [{{name: app, upstream: "http://127.0.0.1:9"}}]
        store: {{url: "memory://", cache_seconds: 1, fail_mode: open}}
        """), file="t.yaml", env={})


async def _eventually(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {check.__doc__}")


async def test_step_up_and_restriction_decided_during_an_outage_are_written_back(tmp_path):
    cfg = _config(tmp_path)
    with run_redis(tmp_path) as redis:
        deciding, other = open_store(redis.url, prefix="wb:"), open_store(redis.url, prefix="wb:")
        await deciding.start()
        await other.start()
        sessions = Sessions(deciding, cfg.session, cfg.store)
        await sessions.start()
        try:
            made = {}
            for name in ("stepped", "restricted", "already"):
                made[name] = (await sessions.create(Identity(sub=name), client_ip="127.0.0.1", user_agent="t",
                                                    route="app")).sid
            # just before the outage another process asked this one to step up, and this process has not heard:
            # its view is stale, and the restriction it decides on that view is looser than what the store holds
            record = await other.get_session(made["already"])
            record.state, record.state_reason, record.version = "step_up_required", "another process", record.version + 1
            await other.put_session(record, 3600)

            redis.stop(keep_data=True)
            with pytest.raises(StoreUnavailable):
                await sessions.set_state(made["stepped"], SessionState.STEP_UP_REQUIRED, "typing unlike the user",
                                         step_up={"method": "totp", "rule_id": "impostor"})
            with pytest.raises(StoreUnavailable):
                await sessions.set_state(made["restricted"], SessionState.RESTRICTED, "relay suspected",
                                         restrictions={"methods": ["GET"]})
            with pytest.raises(StoreUnavailable):
                await sessions.set_state(made["already"], SessionState.RESTRICTED, "during the outage")
            # in force here at once, from the local view, and known as not yet written
            assert (await sessions.get(made["stepped"])).state == SessionState.STEP_UP_REQUIRED
            assert (await sessions.get(made["restricted"])).state == SessionState.RESTRICTED
            assert sessions.unsynced(made["stepped"]).state == SessionState.STEP_UP_REQUIRED

            redis.start()

            async def written_back() -> bool:
                """the outage's step-up and restriction in the store, seen by another process"""
                try:
                    stepped = await other.get_session(made["stepped"])
                    restricted = await other.get_session(made["restricted"])
                except StoreUnavailable:
                    return False
                return (stepped.state == SessionState.STEP_UP_REQUIRED
                        and restricted.state == SessionState.RESTRICTED)

            await _eventually(written_back)
            stepped = await other.get_session(made["stepped"])
            assert stepped.step_up["rule_id"] == "impostor" and stepped.state_reason == "typing unlike the user"
            assert (await other.get_session(made["restricted"])).restrictions == {"methods": ["GET"]}
            already = await other.get_session(made["already"])
            assert already.state == SessionState.STEP_UP_REQUIRED and already.state_reason == "another process"
            assert sessions.unsynced(made["stepped"]) is None and sessions.unsynced(made["restricted"]) is None
        finally:
            await deciding.close()
            await other.close()
