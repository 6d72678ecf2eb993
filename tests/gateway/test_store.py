"""Both stores honour the same contract; Redis is the real thing (the machine's, or one started for the suite)."""

import asyncio
import contextlib
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
    await store.decr("fail")  # an attempt that succeeded takes its count back
    assert await store.incr("fail", 30) == 3
    await store.decr("never-counted")  # never creates a counter (it would outlive its window), never below zero
    assert await store.incr("never-counted", 30) == 1
    await store.decr("never-counted")
    await store.decr("never-counted")
    assert await store.incr("never-counted", 30) == 1


async def test_profiles_and_locks(store):
    await store.put_profile("alice", b"\x00\x01")
    assert await store.get_profile("alice") == b"\x00\x01"
    assert await store.list_profiles() == ["alice"]
    assert await store.delete_profile("alice")
    await store.lock_user("bob", time.time() + 60, "test")
    assert (await store.user_lock("bob"))["reason"] == "test"
    assert await store.user_lock("carol") is None


async def test_create_profile_never_overwrites(store):
    """Enrolment writes create-if-absent: a profile enrolled by another session or imported meanwhile stays."""
    assert await store.create_profile("erin", b"first")
    assert not await store.create_profile("erin", b"second")
    assert await store.get_profile("erin") == b"first"
    assert await store.list_profiles() == ["erin"]
    await store.put_profile("erin", b"imported")  # an admin import still replaces it
    assert not await store.create_profile("erin", b"third")
    assert await store.get_profile("erin") == b"imported"
    assert await store.delete_profile("erin")
    assert await store.create_profile("erin", b"again")
    assert await store.get_profile("erin") == b"again" and await store.list_profiles() == ["erin"]


async def test_locks_are_listed_and_lifted(store):
    now = time.time()
    await store.lock_user("bob", now + 60, "too many failed sign-ins")
    await store.lock_user("carol", now + 1, "policy")
    await store.lock_user("dave", now + 120, "policy")
    await asyncio.sleep(1.2)  # carol's lock runs out on its own and leaves the listing
    locks = await store.list_locks()
    assert sorted(locks) == ["bob", "dave"] and locks["bob"]["reason"] == "too many failed sign-ins"
    assert await store.unlock_user("bob")
    assert not await store.unlock_user("bob")  # nothing in force any more
    assert await store.user_lock("bob") is None and sorted(await store.list_locks()) == ["dave"]
    assert not await store.unlock_user("carol")  # an expired lock is no lock


async def test_a_counter_can_be_reset(store):
    assert [await store.incr("login-failures:x", 30) for _ in range(3)] == [1, 2, 3]
    await store.reset_count("login-failures:x")
    assert await store.incr("login-failures:x", 30) == 1
    await store.reset_count("never-counted")  # no error


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


async def test_a_subscription_counts_only_once_redis_confirms_it(monkeypatch):
    # `subscribe` only writes the command. A server that takes it and never answers (as a pooled connection to a
    # Redis that has gone can look for a moment) must not count as a reconnection: that resynchronised, and forgot
    # every session view, in the middle of an outage
    import gateway.store.redis as redis_store
    from gateway.store.redis import RedisStore

    monkeypatch.setattr(redis_store, "SUBSCRIBE_CONFIRM_S", 0.2)
    subscribes = 0

    async def mute_to_subscribe(reader, writer):
        # answers the connection's set-up like Redis (PING, CLIENT SETINFO), never a SUBSCRIBE
        nonlocal subscribes
        while header := await reader.readline():
            args = []
            for _ in range(int(header[1:])):
                size = int((await reader.readline())[1:])
                args.append((await reader.readexactly(size + 2))[:-2].upper())
            if args[0] == b"SUBSCRIBE":
                subscribes += 1
            elif args[0] == b"HELLO":  # as a Redis without RESP3 answers (redis-py >= 8.2 then falls back to RESP2)
                writer.write(b"-ERR unknown command 'HELLO'\r\n")
                await writer.drain()
            else:
                writer.write(b"+PONG\r\n" if args[0] == b"PING" else b"+OK\r\n")
                await writer.drain()

    server = await asyncio.start_server(mute_to_subscribe, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0")
    listener = asyncio.create_task(store._listen())
    try:
        while subscribes < 3:  # it gave up on two unconfirmed subscriptions and tried again
            assert not store.connected.is_set()
            await asyncio.sleep(0.01)
        assert not store.connected.is_set()
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        server.close()
        await store.close()


async def test_the_broadcast_listener_survives_an_unexpected_error(redis_url, redis_prefix, monkeypatch):
    # a listener that dies leaves the process deaf to terminations published elsewhere; it died on anything that
    # was not a Redis or OS error (redis-py 8.2 raised AttributeError on a HELLO reply it did not expect)
    from gateway.store.redis import RedisStore

    store = RedisStore(redis_url, prefix=redis_prefix)
    real_pubsub = store._redis.pubsub
    failures = []

    def pubsub():
        ps = real_pubsub()
        if not failures:
            failures.append(1)

            async def broken(*_args, **_kwargs):
                raise AttributeError("'bytes' object has no attribute 'get'")

            ps.subscribe = broken
        return ps

    monkeypatch.setattr(store._redis, "pubsub", pubsub)
    await store.start()  # waits for the subscription: the retry after the failure makes it
    try:
        seen = []
        store.subscribe(seen.append)
        await store.publish({"type": "session", "record": {"sid": "x", "sub": "y"}})
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.02)
        assert failures and seen and seen[0]["type"] == "session"
    finally:
        await store.close()


async def test_expired_locks_leave_the_index_as_new_ones_come(store, redis_url, redis_prefix):
    """Lock entries are written for any user name typed at the sign-in form (unknown ones as fingerprints); expired
    ones used to stay in the Redis index (a key without TTL) until an admin listed locks, and in the memory store's
    table for good."""
    now = time.time()
    for i in range(5):
        await store.lock_user(f"~{i:016x}", now - 1, "too many failed sign-ins")  # already expired
    await store.lock_user("erin", now + 60, "policy")
    if redis_url and hasattr(store, "_redis"):
        assert [u.decode() for u in await store._redis.zrange(f"{redis_prefix}locks", 0, -1)] == ["erin"]
    else:
        store._sweep_at = 0  # the memory store sweeps once its tables have doubled: make this write the one
        await store.lock_user("frank", now + 60, "policy")
        assert sorted(store._locks) == ["erin", "frank"]


async def test_expired_counters_are_swept_in_the_memory_store():
    s = open_store("memory://")
    for i in range(3000):  # a new user name per failed sign-in, each counted for one second
        await s.incr(f"login-failures:~{i:016x}", 1)
    assert len(s._counters) <= 3000
    await asyncio.sleep(1.1)
    for i in range(3000):
        await s.incr(f"login-failures:~new{i:013x}", 60)
    assert len(s._counters) < 6000 and all(k.startswith("login-failures:~new") for k in list(s._counters)[-10:])
    assert not any(k.startswith("login-failures:~0") for k in s._counters)
