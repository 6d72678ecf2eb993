"""Signed, expiring, one-time tokens for the gateway's own forms (login, MFA, logout).

A token is bound to the pre-session cookie (a random value the login page sets), so a token lifted from one
browser is useless in another, and it is good for one submission: a replayed form is refused through the
ReplayGuard, which every gateway process shares. Format: `<purpose>.<issued>.<nonce>.<binding tag>.<mac>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable

from gateway.auth.guard import ReplayGuard

_PURPOSE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_TOKEN = re.compile(r"^([a-z][a-z0-9_-]{0,31})\.(\d{1,12})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{43})$")


class CsrfError(Exception):
    """A form token was refused. `reason`: malformed | bad_signature | wrong_purpose | wrong_binding | expired |
    not_yet_valid | replayed. Show the user a generic "the form expired, please try again"."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class CsrfTokens:
    def __init__(self, secret: bytes, replay_guard: ReplayGuard, *, ttl: int = 600, leeway: int = 5,
                 key_prefix: str = "ztgate:csrf:", clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 32:
            raise ValueError("the CSRF secret must be at least 32 bytes (KeyRing.shared_secret('csrf') gives one)")
        self._secret = secret
        self.guard = replay_guard
        self.ttl = ttl
        self.leeway = leeway
        self.key_prefix = key_prefix
        self._clock = clock

    def issue(self, purpose: str, binding: str, *, now: float | None = None) -> str:
        """A token for one submission of the `purpose` form ("login", "mfa", "logout", ...) by the browser
        holding the pre-session cookie value `binding`."""
        if not _PURPOSE.match(purpose):
            raise ValueError(f"invalid purpose {purpose!r}")
        if not binding:
            raise ValueError("a CSRF token must be bound to the pre-session cookie value")
        issued = int(self._clock() if now is None else now)
        body = f"{purpose}.{issued}.{_b64(secrets.token_bytes(16))}.{self._binding_tag(binding)}"
        return f"{body}.{self._mac(body)}"

    async def verify(self, token: str, purpose: str, binding: str, *, now: float | None = None,
                     one_time: bool = True) -> None:
        """Returns if the token is good (and, with one_time, marks it used); raises CsrfError otherwise."""
        match = _TOKEN.match(token or "")
        if not match:
            raise CsrfError("malformed")
        token_purpose, issued_text, nonce, tag, mac = match.groups()
        body = token.rsplit(".", 1)[0]
        if not hmac.compare_digest(mac, self._mac(body)):
            raise CsrfError("bad_signature")
        if token_purpose != purpose:
            raise CsrfError("wrong_purpose")
        if not binding or not hmac.compare_digest(tag, self._binding_tag(binding)):
            raise CsrfError("wrong_binding")
        now = self._clock() if now is None else now
        issued = int(issued_text)
        if issued + self.ttl < now:
            raise CsrfError("expired")
        if issued - self.leeway > now:
            raise CsrfError("not_yet_valid")
        if one_time:
            remaining = int(issued + self.ttl - now) + self.leeway + 1
            if not await self.guard.first_use(f"{self.key_prefix}{nonce}", max(remaining, 1)):
                raise CsrfError("replayed")

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._secret, b"csrf|" + body.encode(), hashlib.sha256).digest())

    def _binding_tag(self, binding: str) -> str:
        return _b64(hmac.new(self._secret, b"bind|" + binding.encode(), hashlib.sha256).digest()[:12])
