"""The session record and the store interface both implementations honour."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, Awaitable, Callable, Protocol


class SessionState(StrEnum):
    ACTIVE = "active"
    STEP_UP_REQUIRED = "step_up_required"
    RESTRICTED = "restricted"
    TERMINATED = "terminated"


# how strict each state is: a decision never loosens a session, and a write-back never overrides a stricter state
STATE_RANK = {SessionState.ACTIVE: 0, SessionState.RESTRICTED: 1, SessionState.STEP_UP_REQUIRED: 2,
              SessionState.TERMINATED: 3}


class StoreUnavailable(Exception):
    """The store cannot be reached; callers decide by fail_mode."""


@dataclass
class SessionRecord:
    sid: str
    sub: str
    email: str = ""
    name: str = ""
    groups: list[str] = field(default_factory=list)
    site: str = ""
    country: str = ""
    idp: str = "directory"
    acr: str = "pwd"
    amr: list[str] = field(default_factory=list)
    auth_time: float = 0.0
    created: float = 0.0
    last_seen: float = 0.0
    expires: float = 0.0
    client_ip: str = ""
    user_agent: str = ""
    route: str = ""
    state: str = SessionState.ACTIVE
    state_reason: str = ""
    restrictions: dict[str, Any] = field(default_factory=dict)
    step_up: dict[str, Any] = field(default_factory=dict)  # method, max_age, requested_at, failures, count
    decision: dict[str, Any] = field(default_factory=dict)  # the last non-allow decision
    assessment: dict[str, Any] = field(default_factory=dict)  # the last Assessment.to_dict()
    version: int = 0  # bumped on every write; lets caches ignore stale broadcasts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SessionRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str | bytes) -> "SessionRecord":
        return cls.from_dict(json.loads(text))

    @property
    def terminated(self) -> bool:
        return self.state == SessionState.TERMINATED


def apply_activity(record: SessionRecord, last_seen: Any, client_ip: Any) -> SessionRecord:
    """The record with the activity a store kept beside it (touch_session), where that is the later one."""
    try:
        seen = float(last_seen)
    except (TypeError, ValueError):
        return record
    if seen > record.last_seen:
        record.last_seen, record.client_ip = seen, str(client_ip or "")
    return record


Broadcast = dict[str, Any]  # {"type": "session", "sid": ..., "record": {...}} | {"type": "policies", ...}
Subscriber = Callable[[Broadcast], Awaitable[None] | None]


class SessionStore(Protocol):
    """What the gateway needs from a store. Every method may raise StoreUnavailable."""

    kind: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...

    # Compare-and-set on `version`: writes the record only if the store holds none of that sid, or holds an older
    # version that is not terminated; True if it was written. A writer that is refused re-reads the record and
    # re-applies its change (gateway.sessions.Sessions.modify). A terminated record is final: never rewritten.
    async def put_session(self, record: SessionRecord, ttl_seconds: int) -> bool: ...
    # Activity only (last_seen, client_ip), kept beside the record and never touching its state or version: a
    # process with an old view of the session must not write that view back to note a request. Ignored when the
    # store has no such session or already holds later activity; True if stored. Reads of the session (get, list)
    # show the later of the record's own activity and this.
    async def touch_session(self, sid: str, last_seen: float, client_ip: str) -> bool: ...
    async def get_session(self, sid: str) -> SessionRecord | None: ...
    async def list_sessions(self) -> list[SessionRecord]: ...
    async def delete_session(self, sid: str) -> None: ...

    # Broadcast to every gateway process (this one included). Delivery order per publisher is kept.
    async def publish(self, message: Broadcast) -> None: ...
    def subscribe(self, callback: Subscriber) -> None: ...

    # ReplayGuard (gateway.auth.totp / csrf): one-time tokens and failure counters.
    async def first_use(self, key: str, ttl_seconds: int) -> bool: ...
    async def incr(self, key: str, ttl_seconds: int) -> int: ...
    async def decr(self, key: str) -> None: ...
    async def reset_count(self, key: str) -> None: ...

    # The latest assessment of a session, apart from the record: it changes every second, the record rarely,
    # and writing it must never race a state change.
    async def put_assessment(self, sid: str, data: dict, ttl_seconds: int) -> None: ...
    async def get_assessment(self, sid: str) -> dict | None: ...

    async def get_profile(self, user: str) -> bytes | None: ...
    async def put_profile(self, user: str, blob: bytes) -> None: ...
    # Stores the profile only if the user has none (enrolment): True if it was stored. Never overwrites one that
    # another session enrolled or an admin imported meanwhile.
    async def create_profile(self, user: str, blob: bytes) -> bool: ...
    async def delete_profile(self, user: str) -> bool: ...
    async def list_profiles(self) -> list[str]: ...

    # Locked accounts: {"until": epoch seconds, "reason": str}; expired locks are gone.
    async def lock_user(self, user: str, until: float, reason: str) -> None: ...
    async def user_lock(self, user: str) -> dict | None: ...
    async def unlock_user(self, user: str) -> bool: ...  # True if a lock was in force
    async def list_locks(self) -> dict[str, dict]: ...

    # A user's registered WebAuthn credentials: public keys, ids and counters only (JSON-able dicts).
    async def put_credentials(self, user: str, credentials: list[dict]) -> None: ...
    async def get_credentials(self, user: str) -> list[dict]: ...

    # Session ownership (gateway/ownership.py), only in a store several processes share (Redis): claim_owner,
    # renew_owner, release_owner, put_scorer_states, get_owner, send_direct, listen_direct. The memory store is one
    # process, which scores every session itself: it has none of them.
