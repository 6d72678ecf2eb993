"""TOTP second factor (RFC 6238) with replay protection and an attempt limit, both kept in a ReplayGuard so that
every gateway process sharing the store enforces them together."""

from __future__ import annotations

import enum
import hmac
import re

import pyotp

from gateway.auth.guard import MemoryReplayGuard, ReplayGuard

__all__ = ["MemoryReplayGuard", "ReplayGuard", "TotpOutcome", "TotpVerifier", "new_secret", "provisioning_uri"]


class TotpOutcome(enum.StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # wrong code
    REPLAYED = "replayed"  # right code, already used in its window
    LOCKED = "locked"  # too many attempts in the window; the code was not even checked
    MALFORMED = "malformed"  # not N digits (not counted as an attempt)


def new_secret() -> str:
    """A fresh base32 secret (160 bits, as RFC 4226 recommends)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, username: str, issuer: str = "ztgate") -> str:
    """otpauth:// URI for authenticator apps (show once, e.g. as a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


class TotpVerifier:
    """`await verify(...)` for a yes/no, `await check(...)` for the reason (to show and to log).

    Brute force: every well-formed attempt increments a per-user counter *before* the code is compared, and
    attempts beyond `max_attempts` within `attempt_window` seconds are refused unchecked. Counting before checking
    keeps the bound exact even under many concurrent guesses (a check-then-count would let a burst through). An
    accepted code then takes its own count back, so only failed (and still unchecked) attempts use up the limit: a
    person who signs in often is never refused for it, and a guesser racing a real sign-in gains nothing from it
    (the sign-in returns its own count, not the guesser's; resetting the counter on success would).
    Replay: an accepted code's time step is marked used for as long as that code could be accepted."""

    def __init__(
        self,
        replay_guard: ReplayGuard,
        *,
        max_attempts: int = 10,
        attempt_window: int = 900,
        digits: int = 6,
        step: int = 30,
        valid_window: int = 1,
        key_prefix: str = "ztgate:totp:",
    ) -> None:
        if max_attempts < 1 or attempt_window < 1:
            raise ValueError("max_attempts and attempt_window must be positive")
        self.guard = replay_guard
        self.max_attempts = max_attempts
        self.attempt_window = attempt_window
        self.digits = digits
        self.step = step
        self.valid_window = valid_window
        self.key_prefix = key_prefix
        # [0-9], not \d: \d takes Arabic-Indic or full-width digits, which then crashed the comparison (a 500 that
        # told a guesser the password was right)
        self._code_format = re.compile(rf"^[0-9]{{{digits}}}$")

    async def verify(self, user_id: str, secret: str, code: str, now: float) -> bool:
        return await self.check(user_id, secret, code, now) is TotpOutcome.ACCEPTED

    async def check(self, user_id: str, secret: str, code: str, now: float) -> TotpOutcome:
        code = "".join(str(code).split())  # people type "123 456"
        if not self._code_format.match(code):
            return TotpOutcome.MALFORMED
        attempts = await self.guard.incr(self.attempts_key(user_id), self.attempt_window)
        if attempts > self.max_attempts:
            return TotpOutcome.LOCKED
        counter = self._matching_counter(secret, code, now)
        if counter is None:
            return TotpOutcome.REJECTED
        # A code for step t is accepted until step t + valid_window ends.
        ttl = self.step * (2 * self.valid_window + 1) + 1
        if not await self.guard.first_use(f"{self.key_prefix}used:{user_id}:{counter}", ttl):
            return TotpOutcome.REPLAYED
        await self.guard.decr(self.attempts_key(user_id))
        return TotpOutcome.ACCEPTED

    def attempts_key(self, user_id: str) -> str:
        """The counter of a user's attempts (an admin's unlock clears it: gateway.auth.lockout)."""
        return f"{self.key_prefix}attempts:{user_id}"

    def _matching_counter(self, secret: str, code: str, now: float) -> int | None:
        totp = pyotp.TOTP(secret, digits=self.digits, interval=self.step)
        current = int(now // self.step)
        matched = None
        # Compare against every candidate (no early exit) so timing does not reveal which step matched.
        for offset in range(-self.valid_window, self.valid_window + 1):
            counter = current + offset
            if hmac.compare_digest(totp.generate_otp(counter), code) and matched is None:
                matched = counter
        return matched
