"""Account lockout: counted per account in the store, names the directory does not know kept only as fingerprints."""

from __future__ import annotations

import time

from gateway.auth.lockout import Lockouts
from gateway.auth.totp import TotpVerifier, new_secret
from gateway.config import LockoutConfig
from gateway.store import open_store


def lockouts(store, **limits) -> Lockouts:
    totp = TotpVerifier(store)
    return Lockouts(store, LockoutConfig(**limits), b"k" * 32, totp_attempts_key=totp.attempts_key)


async def test_the_limit_th_failure_locks_the_account():
    store = open_store("memory://")
    lo = lockouts(store, max_failures=3, duration=60)
    results = [await lo.failed("alice") for _ in range(3)]
    assert [(f.count, f.locked) for f in results] == [(1, False), (2, False), (3, True)]
    lock = await lo.lock_of("alice")
    assert lock is not None and lock.reason == "too many failed sign-ins" and lock.until > time.time() + 50
    assert [x.account for x in await lo.locks()] == ["alice"]


async def test_a_failure_after_a_short_lock_locks_again_at_once():
    # a lock shorter than the counting window must not open a window of free guesses once it runs out
    store = open_store("memory://")
    lo = lockouts(store, max_failures=2, window=900, duration=60)
    await lo.failed("bob")
    await lo.failed("bob")
    await store.unlock_user("bob")  # stands for the lock running out; the failure count is still in its window
    assert (await lo.failed("bob")).locked


async def test_zero_never_locks():
    store = open_store("memory://")
    lo = lockouts(store, max_failures=0)
    assert not any([(await lo.failed("carol")).locked for _ in range(50)])
    assert await lo.lock_of("carol") is None


async def test_unlock_clears_the_lock_and_both_counts():
    store = open_store("memory://")
    lo = lockouts(store, max_failures=3)
    totp = TotpVerifier(store, max_attempts=3)
    for _ in range(3):
        await lo.failed("dave")
        await totp.check("dave", new_secret(), "000000", time.time())
    assert await lo.unlock("dave")
    assert await lo.lock_of("dave") is None
    assert (await lo.failed("dave")).count == 1  # the next mistake starts a new count
    assert await store.incr(totp.attempts_key("dave"), 900) == 1
    assert not await lo.unlock("dave")  # nothing was locked


def test_an_unknown_name_is_kept_only_as_a_stable_fingerprint():
    lo = lockouts(open_store("memory://"))
    typed = "Correct-Horse-Battery-1"  # a password typed into the user-name field
    account = lo.account(typed, known=False)
    assert account.startswith("~") and len(account) == 17 and typed.lower() not in account.lower()
    assert account == lo.account(typed, known=False)  # every process (same key ring) counts it together
    assert account != lo.account("Correct-Horse-Battery-2", known=False)
    other_ring = Lockouts(open_store("memory://"), LockoutConfig(), b"j" * 32)
    assert other_ring.account(typed, known=False) != account  # keyed: not a plain hash anyone can look up
    assert lo.account("alice", known=True) == "alice"
