"""The embedded default: everything in this process. One gateway process only."""

from __future__ import annotations

import inspect
import json
import time

from .base import Broadcast, SessionRecord, Subscriber, apply_activity


class MemoryStore:
    kind = "memory"

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[str, float]] = {}  # sid -> (json, expires_at)
        self._activity: dict[str, tuple[float, str]] = {}  # sid -> (last_seen, client_ip): touch_session
        self._once: dict[str, float] = {}
        self._counters: dict[str, tuple[int, float]] = {}
        self._profiles: dict[str, bytes] = {}
        self._assessments: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, dict] = {}
        self._credentials: dict[str, str] = {}  # user -> JSON list
        self._subscribers: list[Subscriber] = []
        # Expired one-time keys, counters and locks are swept once these tables have doubled since the last sweep:
        # amortised O(1) per write. Counters and locks are written for any user name typed at the sign-in form.
        self._sweep_at = 1024

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    def _expire(self) -> None:
        now = time.time()
        for table in (self._sessions, self._once, self._assessments, self._counters):
            stale = [k for k, v in table.items() if (v[1] if isinstance(v, tuple) else v) <= now]
            for k in stale:
                del table[k]
        for user in [u for u, lock in self._locks.items() if lock["until"] <= now]:
            del self._locks[user]
        for sid in [s for s in self._activity if s not in self._sessions]:
            del self._activity[sid]

    def _written(self) -> None:
        size = len(self._once) + len(self._counters) + len(self._locks)
        if size > self._sweep_at:
            self._expire()
            self._sweep_at = max(1024, 2 * (len(self._once) + len(self._counters) + len(self._locks)))

    async def put_session(self, record: SessionRecord, ttl_seconds: int) -> bool:
        # compare-and-set on the version, as the Redis store's script does (base.SessionStore.put_session)
        current = self._sessions.get(record.sid)
        if current is not None and current[1] > time.time():
            stored = SessionRecord.from_json(current[0])
            if stored.terminated or stored.version >= record.version:
                return False  # a terminated session is final; a newer version was written by someone else
        # stored as JSON so that callers never share mutable state with the store
        self._sessions[record.sid] = (record.to_json(), time.time() + ttl_seconds)
        return True

    async def touch_session(self, sid: str, last_seen: float, client_ip: str) -> bool:
        entry = self._sessions.get(sid)
        if entry is None or entry[1] <= time.time():
            return False
        if self._activity.get(sid, (0.0, ""))[0] > last_seen:
            return False
        self._activity[sid] = (float(last_seen), str(client_ip))
        return True

    def _read(self, entry: tuple[str, float], sid: str) -> SessionRecord:
        record = SessionRecord.from_json(entry[0])
        activity = self._activity.get(sid)
        return apply_activity(record, *activity) if activity else record

    async def get_session(self, sid: str) -> SessionRecord | None:
        entry = self._sessions.get(sid)
        if entry is None or entry[1] <= time.time():
            return None
        return self._read(entry, sid)

    async def list_sessions(self) -> list[SessionRecord]:
        self._expire()
        return [self._read(v, sid) for sid, v in self._sessions.items()]

    async def delete_session(self, sid: str) -> None:
        self._sessions.pop(sid, None)
        self._activity.pop(sid, None)

    async def publish(self, message: Broadcast) -> None:
        for callback in list(self._subscribers):
            result = callback(message)
            if inspect.isawaitable(result):
                await result

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)

    async def first_use(self, key: str, ttl_seconds: int) -> bool:
        now = time.time()
        if self._once.get(key, 0) > now:
            return False
        self._once[key] = now + ttl_seconds
        self._written()
        return True

    async def incr(self, key: str, ttl_seconds: int) -> int:
        now = time.time()
        count, until = self._counters.get(key, (0, 0.0))
        if until <= now:
            count, until = 0, now + ttl_seconds
        self._counters[key] = (count + 1, until)
        self._written()
        return count + 1

    async def decr(self, key: str) -> None:
        count, until = self._counters.get(key, (0, 0.0))
        if count > 0 and until > time.time():
            self._counters[key] = (count - 1, until)

    async def reset_count(self, key: str) -> None:
        self._counters.pop(key, None)

    async def put_assessment(self, sid: str, data: dict, ttl_seconds: int) -> None:
        self._assessments[sid] = (json.dumps(data), time.time() + ttl_seconds)

    async def get_assessment(self, sid: str) -> dict | None:
        entry = self._assessments.get(sid)
        if entry is None or entry[1] <= time.time():
            return None
        return json.loads(entry[0])

    async def get_profile(self, user: str) -> bytes | None:
        return self._profiles.get(user)

    async def put_profile(self, user: str, blob: bytes) -> None:
        self._profiles[user] = bytes(blob)

    async def create_profile(self, user: str, blob: bytes) -> bool:
        if user in self._profiles:
            return False
        self._profiles[user] = bytes(blob)
        return True

    async def delete_profile(self, user: str) -> bool:
        return self._profiles.pop(user, None) is not None

    async def list_profiles(self) -> list[str]:
        return sorted(self._profiles)

    async def lock_user(self, user: str, until: float, reason: str) -> None:
        self._locks[user] = {"until": until, "reason": reason}
        self._written()

    async def user_lock(self, user: str) -> dict | None:
        lock = self._locks.get(user)
        if lock and lock["until"] > time.time():
            return lock
        return None

    async def unlock_user(self, user: str) -> bool:
        lock = self._locks.pop(user, None)
        return lock is not None and lock["until"] > time.time()

    async def list_locks(self) -> dict[str, dict]:
        now = time.time()
        for user in [u for u, lock in self._locks.items() if lock["until"] <= now]:
            del self._locks[user]
        return dict(self._locks)

    async def put_credentials(self, user: str, credentials: list[dict]) -> None:
        self._credentials[user] = json.dumps(credentials)

    async def get_credentials(self, user: str) -> list[dict]:
        raw = self._credentials.get(user)
        return json.loads(raw) if raw else []
