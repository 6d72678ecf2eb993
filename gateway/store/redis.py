"""Redis: sessions as TTL keys, broadcasts over pub/sub, so that several gateway processes act as one."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .base import Broadcast, SessionRecord, StoreUnavailable, Subscriber, apply_activity

log = logging.getLogger("ztgate.store")

SUBSCRIBE_CONFIRM_S = 5.0

# take back one count, never below zero and never creating a counter whose window has ended (it would outlive it)
_DECR_EXISTING = """
local v = tonumber(redis.call('GET', KEYS[1]))
if v and v > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""


# Compare-and-set on the record's version: a process with an older view never overwrites a newer record (it re-reads
# and re-applies its change), and a terminated record is final, never rewritten (not even as terminated again).
# ARGV: record JSON, ttl seconds, version, index score (expiry), sid
_PUT_SESSION = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, obj = pcall(cjson.decode, cur)
  if ok and type(obj) == 'table' then
    if obj['state'] == 'terminated' then return 0 end
    local stored = tonumber(obj['version']) or 0
    if stored >= tonumber(ARGV[3]) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
return 1
"""

# A session's activity beside its record (never the record: that is versioned, and a touch from an old view must not
# undo a state change), expiring with it; only a later observation replaces an earlier one.
# KEYS: session, activity; ARGV: activity JSON, last_seen
_TOUCH_SESSION = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return 0 end
local cur = redis.call('GET', KEYS[2])
if cur then
  local ok, obj = pcall(cjson.decode, cur)
  if ok and type(obj) == 'table' and (tonumber(obj['last_seen']) or 0) > tonumber(ARGV[2]) then return 0 end
end
if ttl > 0 then redis.call('SET', KEYS[2], ARGV[1], 'PX', ttl) else redis.call('SET', KEYS[2], ARGV[1]) end
return 1
"""


class RedisStore:
    kind = "redis"

    def __init__(self, url: str, *, prefix: str = "ztgate:", timeout: float = 2.0) -> None:
        self.url, self.prefix = url, prefix
        self._redis = aioredis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=10,
        )
        self._channel = f"{prefix}broadcast"
        self._put_script = self._redis.register_script(_PUT_SESSION)
        self._touch_script = self._redis.register_script(_TOUCH_SESSION)
        self._decr_script = self._redis.register_script(_DECR_EXISTING)
        self._subscribers: list[Subscriber] = []
        self._listener: asyncio.Task | None = None
        self.connected = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.ping_or_raise()
        self._listener = asyncio.create_task(self._listen(), name="ztgate-store-broadcasts")
        try:
            await asyncio.wait_for(self.connected.wait(), 5)
        except TimeoutError:
            raise StoreUnavailable(f"cannot subscribe to {self._channel} on {self.url}") from None

    async def close(self) -> None:
        if self._listener:
            self._listener.cancel()
            try:
                await self._listener
            except (asyncio.CancelledError, Exception):
                pass
        await self._redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def ping_or_raise(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis at {self.url} is unreachable: {exc}") from None

    async def _call(self, coro_fn, *args, **kwargs) -> Any:
        try:
            return await coro_fn(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from None

    # ------------------------------------------------------------------ sessions

    def _skey(self, sid: str) -> str:
        return f"{self.prefix}session:{sid}"

    def _akey(self, sid: str) -> str:
        return f"{self.prefix}activity:{sid}"

    async def put_session(self, record: SessionRecord, ttl_seconds: int) -> bool:
        # Atomic in Redis: compare-and-set on the version; a terminated session is final (see _PUT_SESSION)
        written = await self._call(
            self._put_script, keys=[self._skey(record.sid), f"{self.prefix}sessions"],
            args=[record.to_json(), max(1, int(ttl_seconds)), int(record.version), time.time() + ttl_seconds,
                  record.sid],
        )
        return bool(written)

    async def touch_session(self, sid: str, last_seen: float, client_ip: str) -> bool:
        activity = json.dumps({"last_seen": float(last_seen), "client_ip": str(client_ip)}, separators=(",", ":"))
        return bool(await self._call(self._touch_script, keys=[self._skey(sid), self._akey(sid)],
                                     args=[activity, repr(float(last_seen))]))

    @staticmethod
    def _read(raw: bytes, activity: bytes | None) -> SessionRecord:
        record = SessionRecord.from_json(raw)
        if activity:
            try:
                data = json.loads(activity)
                record = apply_activity(record, data.get("last_seen"), data.get("client_ip"))
            except (ValueError, AttributeError):
                pass  # unreadable activity: the record's own stands
        return record

    async def get_session(self, sid: str) -> SessionRecord | None:
        # one round trip for both: the record and its activity
        raw, activity = await self._call(self._redis.mget, [self._skey(sid), self._akey(sid)])
        return self._read(raw, activity) if raw else None

    async def list_sessions(self) -> list[SessionRecord]:
        index = f"{self.prefix}sessions"
        await self._call(self._redis.zremrangebyscore, index, "-inf", time.time())
        sids = [s.decode() for s in await self._call(self._redis.zrange, index, 0, -1)]
        if not sids:
            return []
        raws = await self._call(self._redis.mget, [self._skey(s) for s in sids] + [self._akey(s) for s in sids])
        return [self._read(r, a) for r, a in zip(raws[:len(sids)], raws[len(sids):], strict=True) if r]

    async def delete_session(self, sid: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._skey(sid), self._akey(sid))
        pipe.zrem(f"{self.prefix}sessions", sid)
        await self._call(pipe.execute)

    # ------------------------------------------------------------------ broadcast

    async def publish(self, message: Broadcast) -> None:
        await self._call(self._redis.publish, self._channel, json.dumps(message, separators=(",", ":")))

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)

    async def _deliver(self, message: Broadcast) -> None:
        for callback in list(self._subscribers):
            try:
                result = callback(message)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # one bad subscriber must not stop the others
                log.exception("broadcast subscriber failed")

    async def _listen(self) -> None:
        """Keeps one subscription alive; after any gap it tells subscribers to resynchronise, because a
        termination published while we were disconnected was never seen here."""
        delay = 0.1
        first = True
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                await self._confirmed(pubsub)
                self.connected.set()
                if not first:
                    log.warning("store broadcast channel reconnected; resynchronising")
                    await self._deliver({"type": "resync"})
                first, delay = False, 0.1
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    try:
                        data = json.loads(msg["data"])
                    except (ValueError, TypeError):
                        log.warning("ignoring malformed broadcast")
                        continue
                    await self._deliver(data)
            except asyncio.CancelledError:
                await _quietly(pubsub.aclose())
                raise
            except Exception as exc:
                # any error, not only a connection error: a client library or a proxy in front of Redis can fail
                # in ways of its own (redis-py 8.2 raised AttributeError on a bad HELLO reply), and a listener that
                # dies leaves this process deaf to terminations published by every other process
                if not isinstance(exc, (RedisError, OSError)):
                    log.warning("store broadcast channel failed unexpectedly: %r; retrying", exc)
                if self.connected.is_set():
                    log.error("store broadcast channel lost: %s", exc)
                    await self._deliver({"type": "disconnected"})
                self.connected.clear()
                await _quietly(pubsub.aclose())
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _confirmed(self, pubsub: Any) -> None:
        """Waits for Redis to confirm the subscription. `subscribe` only writes the command: on a pooled connection
        whose server has gone, the write can still succeed, and announcing a reconnection then would resynchronise
        (and forget this process's views of its sessions) in the middle of the outage."""
        deadline = asyncio.get_running_loop().time() + SUBSCRIBE_CONFIRM_S
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            msg = await pubsub.get_message(timeout=left)
            if msg is not None and msg.get("type") == "subscribe":
                return
        raise RedisConnectionError(f"no confirmation of the subscription to {self._channel} within {SUBSCRIBE_CONFIRM_S:.0f} s")

    # ------------------------------------------------------------------ replay guard

    async def first_use(self, key: str, ttl_seconds: int) -> bool:
        return bool(await self._call(self._redis.set, f"{self.prefix}once:{key}", b"1", nx=True, ex=max(1, ttl_seconds)))

    async def incr(self, key: str, ttl_seconds: int) -> int:
        k = f"{self.prefix}count:{key}"
        pipe = self._redis.pipeline(transaction=True)
        pipe.incr(k)
        pipe.expire(k, max(1, ttl_seconds), nx=True)
        count, _ = await self._call(pipe.execute)
        return int(count)

    async def decr(self, key: str) -> None:
        await self._call(self._decr_script, keys=[f"{self.prefix}count:{key}"])

    async def reset_count(self, key: str) -> None:
        await self._call(self._redis.delete, f"{self.prefix}count:{key}")

    # ------------------------------------------------------------------ assessments, profiles and locks

    async def put_assessment(self, sid: str, data: dict, ttl_seconds: int) -> None:
        await self._call(self._redis.set, f"{self.prefix}assessment:{sid}", json.dumps(data, separators=(",", ":")),
                         ex=max(1, int(ttl_seconds)))

    async def get_assessment(self, sid: str) -> dict | None:
        raw = await self._call(self._redis.get, f"{self.prefix}assessment:{sid}")
        return json.loads(raw) if raw else None

    async def get_profile(self, user: str) -> bytes | None:
        return await self._call(self._redis.get, f"{self.prefix}profile:{user}")

    async def put_profile(self, user: str, blob: bytes) -> None:
        await self._write_profile(user, blob, only_new=False)

    async def create_profile(self, user: str, blob: bytes) -> bool:
        return await self._write_profile(user, blob, only_new=True)

    async def _write_profile(self, user: str, blob: bytes, *, only_new: bool) -> bool:
        # SET NX decides atomically; adding the user to the index either way is harmless (the profile exists)
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(f"{self.prefix}profile:{user}", blob, nx=only_new)
        pipe.sadd(f"{self.prefix}profiles", user)
        written, _ = await self._call(pipe.execute)
        return bool(written)

    async def delete_profile(self, user: str) -> bool:
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(f"{self.prefix}profile:{user}")
        pipe.srem(f"{self.prefix}profiles", user)
        deleted, _ = await self._call(pipe.execute)
        return bool(deleted)

    async def list_profiles(self) -> list[str]:
        return sorted(u.decode() for u in await self._call(self._redis.smembers, f"{self.prefix}profiles"))

    async def lock_user(self, user: str, until: float, reason: str) -> None:
        ttl = max(1, int(until - time.time()))
        # the lock itself expires on its own; the index (user -> until) only lets admins list locks without a SCAN
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(f"{self.prefix}lock:{user}", json.dumps({"until": until, "reason": reason}), ex=ttl)
        pipe.zadd(f"{self.prefix}locks", {user: until})
        # expired entries go as new ones come: the index holds user names typed at the sign-in form (as
        # fingerprints when unknown), and its own key never expires
        pipe.zremrangebyscore(f"{self.prefix}locks", "-inf", time.time())
        await self._call(pipe.execute)

    async def user_lock(self, user: str) -> dict | None:
        raw = await self._call(self._redis.get, f"{self.prefix}lock:{user}")
        return json.loads(raw) if raw else None

    async def unlock_user(self, user: str) -> bool:
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(f"{self.prefix}lock:{user}")
        pipe.zrem(f"{self.prefix}locks", user)
        deleted, _ = await self._call(pipe.execute)
        return bool(deleted)

    async def list_locks(self) -> dict[str, dict]:
        index = f"{self.prefix}locks"
        await self._call(self._redis.zremrangebyscore, index, "-inf", time.time())
        users = [u.decode() for u in await self._call(self._redis.zrange, index, 0, -1)]
        if not users:
            return {}
        raws = await self._call(self._redis.mget, [f"{self.prefix}lock:{u}" for u in users])
        return {u: json.loads(raw) for u, raw in zip(users, raws, strict=True) if raw}

    async def put_credentials(self, user: str, credentials: list[dict]) -> None:
        await self._call(self._redis.set, f"{self.prefix}credentials:{user}",
                         json.dumps(credentials, separators=(",", ":")))

    async def get_credentials(self, user: str) -> list[dict]:
        raw = await self._call(self._redis.get, f"{self.prefix}credentials:{user}")
        return json.loads(raw) if raw else []

    # ------------------------------------------------------------------ session ownership (gateway/ownership.py)
    # One process scores each session: it holds `owner:{sid}` (its process id, with a TTL), persists the scorer's
    # state to `scorer:{sid}`, and hears what the others observe of the session on its own channel `direct:{id}`.

    def _owner_script(self, name: str, text: str) -> Any:
        scripts = self.__dict__.setdefault("_owner_scripts", {})
        if name not in scripts:
            scripts[name] = self._redis.register_script(text)
        return scripts[name]

    def _owner_keys(self, sid: str) -> list[str]:
        return [f"{self.prefix}owner:{sid}", f"{self.prefix}scorer:{sid}", self._skey(sid)]

    async def claim_owner(self, sid: str, me: str, ttl_ms: int) -> tuple[str, bytes | None]:
        """Takes the session's lease if nobody holds it (or `me` does): (me, the persisted scorer state or None).
        Else (the holder, None). One atomic round trip."""
        script = self._owner_script("claim", _CLAIM_OWNER)
        owner, state = await self._call(script, keys=self._owner_keys(sid)[:2], args=[me, int(ttl_ms)])
        return owner.decode(), state

    async def renew_owner(self, sids: list[str], me: str, ttl_ms: int) -> list[int]:
        """Per session: 1 the lease is `me`'s (renewed, or taken again after it lapsed), 0 another process holds it,
        -1 the session is gone (lease released)."""
        script = self._owner_script("renew", _RENEW_OWNER)
        out: list[int] = []
        for start in range(0, len(sids), 500):
            chunk = sids[start : start + 500]
            keys = [k for sid in chunk for k in (self._owner_keys(sid)[0], self._owner_keys(sid)[2])]
            out.extend(int(x) for x in await self._call(script, keys=keys, args=[me, int(ttl_ms)]))
        return out

    async def release_owner(self, sid: str, me: str, state: bytes | None, ttl_seconds: int) -> None:
        """Gives the lease up if `me` holds it; with `state`, stores it for the next owner, else deletes the stored
        state (the session is over)."""
        script = self._owner_script("release", _RELEASE_OWNER)
        await self._call(script, keys=self._owner_keys(sid)[:2],
                         args=[me, state if state is not None else b"", 1 if state is not None else 0,
                               max(1, int(ttl_seconds))])

    async def put_scorer_states(self, states: dict[str, bytes], ttl_seconds: int) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for sid, blob in states.items():
            pipe.set(f"{self.prefix}scorer:{sid}", blob, ex=max(1, int(ttl_seconds)))
        await self._call(pipe.execute)

    async def get_owner(self, sid: str) -> str | None:
        raw = await self._call(self._redis.get, f"{self.prefix}owner:{sid}")
        return raw.decode() if raw else None

    async def send_direct(self, to: str, message: dict) -> None:
        """To the one process `to` (listen_direct), not to all. Messages one caller sends one after another arrive
        in that order (one PUBLISH each, awaited)."""
        await self._call(self._redis.publish, f"{self.prefix}direct:{to}", json.dumps(message, separators=(",", ":")))

    async def listen_direct(self, me: str, callback: Subscriber) -> None:
        """Runs until cancelled: hands every message sent to `me` to `callback`, in order, and {"type": "subscribed"}
        after each (re)subscription. What is sent while the subscription is down is lost."""
        channel = f"{self.prefix}direct:{me}"
        delay = 0.1
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(channel)
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    if msg.get("type") == "subscribe":
                        delay = 0.1
                        data: Any = {"type": "subscribed"}
                    elif msg.get("type") != "message":
                        continue
                    else:
                        try:
                            data = json.loads(msg["data"])
                        except (ValueError, TypeError):
                            log.warning("ignoring a malformed message on %s", channel)
                            continue
                    result = callback(data)
                    if inspect.isawaitable(result):
                        await result
            except asyncio.CancelledError:
                await _quietly(pubsub.aclose())
                raise
            except Exception as exc:
                log.warning("direct channel %s lost (%r); resubscribing", channel, exc)
                await _quietly(pubsub.aclose())
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)


_CLAIM_OWNER = """
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {ARGV[1], redis.call('GET', KEYS[2])}
end
return {cur, false}
"""

# KEYS: lease, session record, per session; 1 mine, 0 another's, -1 the session is gone (its lease deleted if mine)
_RENEW_OWNER = """
local out = {}
for i = 1, #KEYS, 2 do
  local cur = redis.call('GET', KEYS[i])
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    if cur == ARGV[1] then redis.call('DEL', KEYS[i]) end
    out[#out + 1] = -1
  elseif cur == false or cur == ARGV[1] then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

_RELEASE_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[3] == '1' then redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[4]) else redis.call('DEL', KEYS[2]) end
end
return 1
"""


async def _quietly(awaitable) -> None:
    try:
        await awaitable
    except Exception:
        pass
