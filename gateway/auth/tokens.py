"""The two JWTs ztgate signs: the session cookie token and the upstream identity assertion.

Both are signed by the KeyRing's current key and checked against the ring's published keys with the algorithm
pinned to the key (never taken from the token). Both keep a bounded cache so the hot path (every proxied request)
costs a dict lookup: verified session tokens until they expire, signed assertions until shortly before they do.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from gateway.auth.keys import SUPPORTED_ALGORITHMS, KeyRing

SESSION_AUDIENCE = "ztgate-session"
ASSERTION_HEADER = "X-Ztgate-Assertion"
JWKS_PATH = "/.well-known/ztgate/jwks.json"
MAX_ASSERTION_LIFETIME = 60


class TokenError(Exception):
    """A token was refused. `reason` is a stable code for logs, metrics and security events:
    malformed | alg_not_allowed | unknown_key | bad_signature | expired | not_yet_valid | wrong_audience |
    wrong_issuer | missing_claim | invalid_claim."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True, slots=True)
class SessionClaims:
    sid: str
    sub: str
    acr: str
    amr: tuple[str, ...]
    auth_time: int
    iat: int
    exp: int
    iss: str
    kid: str
    gen: int | None = None  # the session's step-up count when issued (None: a token from before the claim existed)


class _Lru[K, V]:
    """Bounded LRU map (single-threaded; the gateway's event loop owns it)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


_JWT_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    (jwt.InvalidIssuerError, "wrong_issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidAlgorithmError, "alg_not_allowed"),
    (jwt.DecodeError, "malformed"),
)


def _decode(token: str, keyring: KeyRing, *, audience: str, issuer: str) -> tuple[dict[str, Any], str]:
    """Signature, alg, kid, aud and iss checks; time checks are the caller's (they use the caller's clock)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenError("malformed", str(exc)) from None
    alg = header.get("alg")
    if alg not in SUPPORTED_ALGORITHMS:
        raise TokenError("alg_not_allowed", f"alg {alg!r}")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise TokenError("unknown_key", "no kid in the header")
    key = keyring.get(kid)
    if key is None and keyring.refresh():  # another process may have rotated
        key = keyring.get(kid)
    if key is None:
        raise TokenError("unknown_key", f"kid {kid!r} is not in the key ring")
    if alg != key.algorithm:
        raise TokenError("alg_not_allowed", f"alg {alg!r} but key {kid} is {key.algorithm}")
    try:
        claims = jwt.decode(
            token,
            key.public_key,
            algorithms=[key.algorithm],
            audience=audience,
            issuer=issuer,
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                     "require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.PyJWTError as exc:
        for kind, reason in _JWT_ERRORS:
            if isinstance(exc, kind):
                raise TokenError(reason, str(exc)) from None
        raise TokenError("malformed", str(exc)) from None
    return claims, kid


def _int_claim(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TokenError("invalid_claim" if name in claims else "missing_claim", f"{name} must be an integer")
    return value


def _str_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str):
        raise TokenError("invalid_claim" if name in claims else "missing_claim", f"{name} must be a string")
    return value


class SessionTokens:
    """Issues and verifies the session cookie JWT (aud="ztgate-session")."""

    def __init__(
        self,
        keyring: KeyRing,
        issuer: str,
        ttl: int = 300,
        *,
        leeway: int = 5,
        cache_size: int = 20_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        if ttl > keyring.max_token_lifetime:
            raise ValueError(f"ttl {ttl} s exceeds the key ring's max_token_lifetime {keyring.max_token_lifetime} s: "
                             "pruned keys would orphan live cookies")
        self.keyring = keyring
        self.issuer = issuer
        self.ttl = ttl
        self.leeway = leeway
        self._clock = clock
        self._cache: _Lru[str, SessionClaims] = _Lru(cache_size)

    def issue(self, sid: str, sub: str, acr: str, amr: Sequence[str], auth_time: int | float,
              *, now: float | None = None, gen: int = 0) -> str:
        now_s = int(self._clock() if now is None else now)
        key = self.keyring.signing_key(now_s)
        payload = {
            "iss": self.issuer, "aud": SESSION_AUDIENCE, "sub": sub, "sid": sid, "acr": acr, "amr": list(amr),
            "auth_time": int(auth_time), "iat": now_s, "exp": now_s + self.ttl, "gen": int(gen),
        }
        token = jwt.encode(payload, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})
        self._cache.put(token, SessionClaims(sid, sub, acr, tuple(amr), int(auth_time), now_s, now_s + self.ttl,
                                             self.issuer, key.kid, int(gen)))
        return token

    def verify(self, token: str, *, now: float | None = None) -> SessionClaims:
        """The claims of a valid token, or TokenError(reason). A token seen before costs a dict lookup."""
        now = self._clock() if now is None else now
        cached = self._cache.get(token)
        if cached is not None:
            if cached.exp + self.leeway <= now:
                self._cache.pop(token)
                raise TokenError("expired", f"expired at {cached.exp}")
            if cached.kid in self.keyring:
                return cached
            self._cache.pop(token)  # its key was removed: check again from scratch (and fail)
        if not isinstance(token, str) or len(token) > 8192:
            raise TokenError("malformed", "not a compact JWT of sane size")
        raw, kid = _decode(token, self.keyring, audience=SESSION_AUDIENCE, issuer=self.issuer)
        exp, iat = _int_claim(raw, "exp"), _int_claim(raw, "iat")
        if exp + self.leeway <= now:
            raise TokenError("expired", f"expired at {exp}")
        if iat - self.leeway > now:
            raise TokenError("not_yet_valid", f"issued at {iat}, in the future")
        amr = raw.get("amr")
        if not isinstance(amr, list) or not all(isinstance(m, str) for m in amr):
            raise TokenError("invalid_claim", "amr must be a list of strings")
        claims = SessionClaims(
            sid=_str_claim(raw, "sid"), sub=_str_claim(raw, "sub"), acr=_str_claim(raw, "acr"), amr=tuple(amr),
            auth_time=_int_claim(raw, "auth_time"), iat=iat, exp=exp, iss=_str_claim(raw, "iss"), kid=kid,
            gen=_int_claim(raw, "gen") if "gen" in raw else None,
        )
        self._cache.put(token, claims)
        return claims

    def needs_refresh(self, claims: SessionClaims, now: float | None = None) -> bool:
        """True when less than half the ttl remains: re-issue the cookie on this response."""
        now = self._clock() if now is None else now
        return claims.exp - now < self.ttl / 2

    def forget(self, token: str) -> None:
        """Drop one token from the verification cache (e.g. at logout; the store is what revokes it)."""
        self._cache.pop(token)

    def clear_cache(self) -> None:
        self._cache.clear()


@dataclass(frozen=True, slots=True)
class _SignedAssertion:
    token: str
    exp: int
    kid: str


class AssertionSigner:
    """Signs the short-lived `X-Ztgate-Assertion` JWT for an upstream app (aud = the app's audience).

    `claims` carries sub, email, groups, sid, acr, amr, auth_time, ztgate_state (anything JSON); iss, aud, iat and
    exp are added here. An identical assertion for the same (sid, audience, claims) is reused until
    `reuse_margin` seconds before it expires, so most requests skip the signature."""

    RESERVED = frozenset({"iss", "aud", "iat", "exp", "nbf", "jti"})

    def __init__(
        self,
        keyring: KeyRing,
        issuer: str,
        lifetime: int = MAX_ASSERTION_LIFETIME,
        *,
        reuse_margin: int = 20,
        cache_size: int = 20_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < lifetime <= MAX_ASSERTION_LIFETIME:
            raise ValueError(f"assertion lifetime must be in (0, {MAX_ASSERTION_LIFETIME}] seconds, got {lifetime}")
        if not 0 <= reuse_margin < lifetime:
            raise ValueError("reuse_margin must be in [0, lifetime)")
        self.keyring = keyring
        self.issuer = issuer
        self.lifetime = lifetime
        self.reuse_margin = reuse_margin
        self._clock = clock
        self._cache: _Lru[tuple[Any, str, bytes], _SignedAssertion] = _Lru(cache_size)

    def clock(self) -> float:
        return self._clock()

    def sign(self, audience: str, claims: Mapping[str, Any], *, now: float | None = None) -> str:
        return self.signed(audience, claims, now=now).token

    def signed(self, audience: str, claims: Mapping[str, Any], *, now: float | None = None) -> "_SignedAssertion":
        """Like sign(), with the assertion's expiry: a caller keeping it must stop using it `reuse_margin`
        seconds before `exp`, as this cache does."""
        if not audience or audience == SESSION_AUDIENCE:
            raise ValueError(f"an upstream audience must be non-empty and not {SESSION_AUDIENCE!r}")
        reserved = self.RESERVED.intersection(claims)
        if reserved:
            raise ValueError(f"claims must not set {', '.join(sorted(reserved))}: the signer sets them")
        if not isinstance(claims.get("sub"), str):
            raise ValueError("claims need a string 'sub'")
        now = self._clock() if now is None else now
        digest = hashlib.blake2b(
            json.dumps(claims, sort_keys=True, separators=(",", ":"), default=_json_default).encode(), digest_size=16
        ).digest()
        cache_key = (claims.get("sid"), audience, digest)
        cached = self._cache.get(cache_key)
        if cached is not None and cached.exp - now > self.reuse_margin and cached.kid in self.keyring:
            return cached
        key = self.keyring.signing_key(now)
        now_s = int(now)
        payload = {**claims, "iss": self.issuer, "aud": audience, "iat": now_s, "exp": now_s + self.lifetime}
        token = jwt.encode(payload, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid},
                           json_encoder=_JsonEncoder)
        signed = _SignedAssertion(token, now_s + self.lifetime, key.kid)
        self._cache.put(cache_key, signed)
        return signed


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"claim value of type {type(value).__name__} is not JSON")


class _JsonEncoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        return _json_default(o)
