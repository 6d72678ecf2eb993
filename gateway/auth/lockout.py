"""Account lockout: failed sign-ins counted per account, a lock once they reach `identity.lockout.max_failures`,
and what an administrator needs to lift one.

Every count and lock lives in the shared store, so all gateway processes enforce one limit together.

A name the directory does not know is never kept as typed. People type their password into the user-name field
often enough that a counter key, a lock or a log line holding the raw name would store passwords. Such a name is
counted under a keyed fingerprint (`~` and 16 hex digits, HMAC-SHA256 with a key-ring secret). It locks after the
same number of failures as a real account, so lockouts do not reveal which names exist.

One-time-code attempts have their own limit (`totp_max_attempts`, enforced by gateway.auth.totp). Lifting a lock
clears both counts, so the user's next mistake does not lock the account again at once.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config import LockoutConfig

UNKNOWN_PREFIX = "~"  # directory user names never start with it (directory.USERNAME)
FAILURES_KEY = "login-failures:"
REASON = "too many failed sign-ins"


@dataclass(frozen=True)
class Lock:
    account: str
    until: float
    reason: str

    @property
    def known(self) -> bool:
        return not self.account.startswith(UNKNOWN_PREFIX)

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.account, "until": self.until, "reason": self.reason, "known": self.known}


@dataclass(frozen=True)
class Failure:
    """One failed sign-in, counted: `locked` when this failure locked the account."""

    account: str
    count: int
    locked: bool


class Lockouts:
    def __init__(self, store: Any, config: "LockoutConfig", secret: bytes, *, totp_attempts_key: Any = None) -> None:
        self.store = store
        self.config = config
        self._secret = secret
        self._totp_attempts_key = totp_attempts_key  # user -> the TOTP verifier's attempt counter key

    def account(self, name: str, *, known: bool) -> str:
        """The key a sign-in attempt is counted under: the user name if the directory knows it, else a fingerprint."""
        if known:
            return name
        digest = hmac.new(self._secret, name.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return UNKNOWN_PREFIX + digest[:16]

    async def lock_of(self, account: str) -> Lock | None:
        raw = await self.store.user_lock(account)
        return None if raw is None else Lock(account, float(raw["until"]), str(raw.get("reason", "")))

    async def failed(self, account: str, now: float | None = None) -> Failure:
        """Counts a failed sign-in; locks the account when the count reaches the limit."""
        count = await self.store.incr(f"{FAILURES_KEY}{account}", self.config.window)
        limit = self.config.max_failures
        # >= : a failure after a lock shorter than the window ran out locks again at once
        locked = limit > 0 and count >= limit
        if locked:
            await self.store.lock_user(account, (time.time() if now is None else now) + self.config.duration, REASON)
        return Failure(account, count, locked)

    async def unlock(self, account: str) -> bool:
        """Lifts a lock and clears the account's failure counts. True if a lock was in force."""
        was_locked = await self.store.unlock_user(account)
        await self.store.reset_count(f"{FAILURES_KEY}{account}")
        if self._totp_attempts_key is not None:
            await self.store.reset_count(self._totp_attempts_key(account))
        return was_locked

    async def locks(self) -> list[Lock]:
        raw = await self.store.list_locks()
        return sorted((Lock(a, float(v["until"]), str(v.get("reason", ""))) for a, v in raw.items()),
                      key=lambda lock: lock.until)
