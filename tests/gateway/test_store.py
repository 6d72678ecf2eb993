"""Both stores honour the same contract; Redis is the real thing (the machine's, or one started for the suite)."""

import asyncio
import time

import pytest

from gateway.store import SessionRecord, open_store


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis_url, redis_prefix):
    s = open_store("memory://" if request.param == "memory" else redis_url, prefix=redis_prefix)
    await s.start()
    yield s
    await s.close()


async def test_session_roundtrip_and_list(store):
    rec = SessionRecord(sid="s1", sub="alice", groups=["a"], created=time.time())
    await store.put_session(rec, 60)
    got = await store.get_session("s1")
    assert got.sub == "alice" and got.groups == ["a"]
    assert [r.sid for r in await store.list_sessions()] == ["s1"]
    await store.delete_session("s1")
    assert await store.get_session("s1") is None


async def test_terminated_is_never_revived(store):
    await store.put_session(SessionRecord(sid="s2", sub="bob", state="terminated"), 60)
    await store.put_session(SessionRecord(sid="s2", sub="bob", state="active"), 60)
    assert (await store.get_session("s2")).state == "terminated"


async def test_broadcast_reaches_subscribers(store):
    seen = []
    store.subscribe(lambda m: seen.append(m))
    await store.publish({"type": "session", "record": {"sid": "x", "sub": "y"}})
    for _ in range(50):
        if seen:
            break
        await asyncio.sleep(0.02)
    assert seen and seen[0]["record"]["sid"] == "x"


async def test_replay_guard(store):
    assert await store.first_use("code-1", 30)
    assert not await store.first_use("code-1", 30)
    assert [await store.incr("fail", 30) for _ in range(3)] == [1, 2, 3]


async def test_profiles_and_locks(store):
    await store.put_profile("alice", b"\x00\x01")
    assert await store.get_profile("alice") == b"\x00\x01"
    assert await store.list_profiles() == ["alice"]
    assert await store.delete_profile("alice")
    await store.lock_user("bob", time.time() + 60, "test")
    assert (await store.user_lock("bob"))["reason"] == "test"
    assert await store.user_lock("carol") is None


async def test_unreachable_redis_is_a_clear_error():
    from gateway.store import StoreUnavailable

    s = open_store("redis://127.0.0.1:1/0")
    with pytest.raises(StoreUnavailable, match="unreachable"):
        await s.start()
    await s.close()


def test_session_ids_never_start_like_a_cli_option():
    # A sid beginning with '-' broke `ztgate sessions show SID` (argparse read it as an option).
    from gateway.sessions import new_session_id

    ids = [new_session_id() for _ in range(4000)]
    assert all(i[0].isalnum() and len(i) == 24 for i in ids)
    assert len(set(ids)) == len(ids)


def test_cli_accepts_a_legacy_sid_starting_with_a_dash_after_double_dash():
    # Sessions created before ids avoided a leading '-' may still be live in Redis.
    from gateway.cli.main import _parser

    args = _parser().parse_args(["sessions", "--url", "http://gw", "--token", "t", "show", "--", "-abc"])
    assert (args.action, args.target, args.url) == ("show", "-abc", "http://gw")
