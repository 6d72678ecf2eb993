"""TOTP: window, replay refusal, attempt limit."""

from __future__ import annotations

import pyotp
import pytest

from gateway.auth.guard import MemoryReplayGuard, ReplayGuard
from gateway.auth.totp import TotpOutcome, TotpVerifier, new_secret, provisioning_uri

NOW = 1_800_000_015.0  # mid-step: steps are 30 s


@pytest.fixture
def secret() -> str:
    return new_secret()


def code_at(secret: str, t: float) -> str:
    return pyotp.TOTP(secret).at(t)


async def test_accepts_the_current_and_adjacent_steps_only(secret: str) -> None:
    verifier = TotpVerifier(MemoryReplayGuard())
    assert await verifier.verify("alice", secret, code_at(secret, NOW), NOW)
    assert await verifier.verify("alice", secret, code_at(secret, NOW - 30), NOW)
    assert await verifier.verify("alice", secret, code_at(secret, NOW + 30), NOW)
    assert await verifier.check("alice", secret, code_at(secret, NOW - 60), NOW) is TotpOutcome.REJECTED
    assert await verifier.check("alice", secret, code_at(secret, NOW + 60), NOW) is TotpOutcome.REJECTED


async def test_a_code_is_accepted_once(secret: str) -> None:
    verifier = TotpVerifier(MemoryReplayGuard())
    code = code_at(secret, NOW)
    assert await verifier.check("alice", secret, code, NOW) is TotpOutcome.ACCEPTED
    assert await verifier.check("alice", secret, code, NOW + 5) is TotpOutcome.REPLAYED
    assert await verifier.check("alice", secret, code, NOW + 30) is TotpOutcome.REPLAYED  # now the previous step
    assert await verifier.check("alice", secret, code_at(secret, NOW + 30), NOW + 30) is TotpOutcome.ACCEPTED


async def test_replay_is_per_user(secret: str) -> None:
    verifier = TotpVerifier(MemoryReplayGuard())
    code = code_at(secret, NOW)
    assert await verifier.verify("alice", secret, code, NOW)
    assert await verifier.verify("bob", secret, code, NOW)  # same secret only in this test


async def test_lockout_after_too_many_attempts(secret: str) -> None:
    verifier = TotpVerifier(MemoryReplayGuard(), max_attempts=3, attempt_window=900)
    wrong = f"{(int(code_at(secret, NOW)) + 1) % 1_000_000:06d}"
    for _ in range(3):
        assert await verifier.check("alice", secret, wrong, NOW) is TotpOutcome.REJECTED
    # Locked: even the right code is refused without being checked (and is not burnt).
    assert await verifier.check("alice", secret, code_at(secret, NOW), NOW) is TotpOutcome.LOCKED
    assert await verifier.check("bob", secret, code_at(secret, NOW), NOW) is TotpOutcome.ACCEPTED


async def test_lockout_ends_with_the_window(secret: str) -> None:
    clock = [0.0]
    verifier = TotpVerifier(MemoryReplayGuard(clock=lambda: clock[0]), max_attempts=1, attempt_window=60)
    assert await verifier.check("alice", secret, _wrong(secret, NOW), NOW) is TotpOutcome.REJECTED
    assert await verifier.check("alice", secret, code_at(secret, NOW), NOW) is TotpOutcome.LOCKED
    clock[0] = 61.0
    assert await verifier.check("alice", secret, code_at(secret, NOW + 90), NOW + 90) is TotpOutcome.ACCEPTED


def _wrong(secret: str, now: float) -> str:
    """A well-formed code that no step around `now` accepts."""
    valid = {code_at(secret, now + 30 * k) for k in (-1, 0, 1)}
    return next(c for c in (f"{i:06d}" for i in range(1000)) if c not in valid)


async def test_accepted_codes_do_not_use_up_the_attempts(secret: str) -> None:
    # every attempt is counted before it is checked; an accepted one takes its own count back, so a person who signs
    # in often is never locked out by it, while failures still are counted in full
    verifier = TotpVerifier(MemoryReplayGuard(), max_attempts=2, attempt_window=900)
    for k in range(6):  # six sign-ins, each with the code of a new time step
        assert await verifier.check("alice", secret, code_at(secret, NOW + 30 * k), NOW + 30 * k) is TotpOutcome.ACCEPTED
    later = NOW + 30 * 6
    assert await verifier.check("alice", secret, _wrong(secret, later), later) is TotpOutcome.REJECTED
    # a success between failures gives back only its own count: two failures in all, then locked
    assert await verifier.check("alice", secret, code_at(secret, later), later) is TotpOutcome.ACCEPTED
    assert await verifier.check("alice", secret, _wrong(secret, later), later) is TotpOutcome.REJECTED
    assert await verifier.check("alice", secret, code_at(secret, later + 30), later + 30) is TotpOutcome.LOCKED


async def test_malformed_codes_are_not_counted(secret: str) -> None:
    verifier = TotpVerifier(MemoryReplayGuard(), max_attempts=1)
    for junk in ["", "12345", "1234567", "abcdef", "12 34 5x"]:
        assert await verifier.check("alice", secret, junk, NOW) is TotpOutcome.MALFORMED
    code = code_at(secret, NOW)
    assert await verifier.check("alice", secret, f"{code[:3]} {code[3:]}", NOW) is TotpOutcome.ACCEPTED


async def test_concurrent_guesses_cannot_exceed_the_limit(secret: str) -> None:
    import asyncio

    verifier = TotpVerifier(MemoryReplayGuard(), max_attempts=5)
    outcomes = await asyncio.gather(*(verifier.check("alice", secret, f"{i:06d}", NOW) for i in range(50)))
    assert sum(o is not TotpOutcome.LOCKED for o in outcomes) == 5


def test_memory_guard_satisfies_the_protocol() -> None:
    assert isinstance(MemoryReplayGuard(), ReplayGuard)


def test_provisioning_uri(secret: str) -> None:
    uri = provisioning_uri(secret, "alice")
    assert uri.startswith("otpauth://totp/ztgate:alice?") and f"secret={secret}" in uri


@pytest.mark.parametrize("code", ["١٢٣٤٥٦", "１２３４５６", "12345٦"])
async def test_digits_of_other_scripts_are_malformed_not_a_crash(secret: str, code: str) -> None:
    # \d took them, and the constant-time comparison then raised TypeError: a 500 only when the password was right
    verifier = TotpVerifier(MemoryReplayGuard())
    assert await verifier.check("alice", secret, code, NOW) is TotpOutcome.MALFORMED
