"""How the demo app trusts ztgate: it verifies the `X-Ztgate-Assertion` header (ES256 JWT) against the gateway's JWKS.

The JWKS is fetched asynchronously: under `ztgate demo` the gateway and this app share one event loop, so a
blocking fetch (PyJWKClient uses urllib) from a request handler would wait forever on the gateway it blocks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

ASSERTION_HEADER = "x-ztgate-assertion"
ALGORITHM = "ES256"
MAX_TOKEN_BYTES = 8192
LEEWAY_SECONDS = 10
JWKS_TTL_SECONDS = 300.0
# An unknown `kid` triggers a refetch (the gateway may have rotated), but not more often than this, so a flood
# of forged tokens with random kids cannot turn the app into a JWKS-fetching amplifier.
JWKS_MIN_REFETCH_SECONDS = 10.0
JWKS_FETCH_TIMEOUT_SECONDS = 5.0


class AssertionRejected(Exception):
    """The request does not carry a valid assertion. `status` is 401 for the client's fault and 503 when this app
    cannot check (no JWKS configured, gateway unreachable)."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the gateway says the user is."""

    sub: str
    email: str
    name: str
    groups: tuple[str, ...]
    acr: str
    amr: tuple[str, ...]
    ztgate_state: str
    claims: Mapping[str, Any]

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Identity:
        return cls(
            sub=str(claims.get("sub", "")),
            email=str(claims.get("email", "")),
            name=str(claims.get("name", "")),
            groups=_str_tuple(claims.get("groups")),
            acr=str(claims.get("acr", "")),
            amr=_str_tuple(claims.get("amr")),
            ztgate_state=str(claims.get("ztgate_state", "")),
            claims=dict(claims),
        )

    @property
    def display_name(self) -> str:
        return self.name or self.email or self.sub


def _str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    if isinstance(value, str) and value:
        return (value,)
    return ()


class JwksKeys:
    """The gateway's public keys: a static JWKS document, or fetched lazily from a URL and cached."""

    def __init__(
        self,
        *,
        url: str | None = None,
        document: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        if document is not None:
            self._keys = _parse_jwks(document, source="the static JWKS")
            self._fetched_at = float("inf")  # static: never refetch

    @property
    def configured(self) -> bool:
        return self._url is not None or self._fetched_at == float("inf")

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        if not self.configured:
            raise AssertionRejected(
                "this app trusts no gateway yet: it was started without a JWKS URL (jwks_url)", status=503
            )
        if self._stale():
            await self._refresh(force=False)
        key = self._pick(kid)
        if key is None and self._may_refetch():
            await self._refresh(force=True)
            key = self._pick(kid)
        if key is None:
            raise AssertionRejected(f"assertion signed with an unknown key (kid={kid!r})")
        return key

    def _pick(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        # A token without `kid` is only unambiguous when the gateway publishes exactly one key.
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at > JWKS_TTL_SECONDS

    def _may_refetch(self) -> bool:
        return (
            self._url is not None
            and self._fetched_at is not None
            and self._clock() - self._fetched_at >= JWKS_MIN_REFETCH_SECONDS
        )

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            # Another request may have refreshed while this one waited for the lock.
            if not force and not self._stale():
                return
            if force and not self._may_refetch():
                return
            assert self._url is not None
            try:
                async with httpx.AsyncClient(timeout=JWKS_FETCH_TIMEOUT_SECONDS) as client:
                    response = await client.get(self._url)
                    response.raise_for_status()
                    document = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise AssertionRejected(
                    f"cannot fetch the gateway's JWKS from {self._url}: {exc}", status=503
                ) from exc
            self._keys = _parse_jwks(document, source=self._url)
            self._fetched_at = self._clock()


def _parse_jwks(document: Any, *, source: str) -> dict[str | None, jwt.PyJWK]:
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise AssertionRejected(f"{source} is not a JWKS document (no 'keys' list)", status=503)
    keys: dict[str | None, jwt.PyJWK] = {}
    for entry in document["keys"]:
        # Skip keys this app cannot use (other algorithms, encryption keys) instead of failing on them.
        if not isinstance(entry, Mapping) or entry.get("use", "sig") != "sig" or entry.get("kty") != "EC":
            continue
        try:
            key = jwt.PyJWK(dict(entry), algorithm=ALGORITHM)
        except jwt.PyJWTError:
            continue
        keys[entry.get("kid")] = key
    if not keys:
        raise AssertionRejected(f"{source} holds no usable ES256 signing key", status=503)
    return keys


class AssertionVerifier:
    """Checks one header value: signature (ES256 only), audience, optional issuer, expiry."""

    def __init__(self, keys: JwksKeys, *, audience: str, issuer: str | None = None) -> None:
        self._keys = keys
        self._audience = audience
        self._issuer = issuer

    async def verify(self, token: str | None) -> Identity:
        if not token:
            raise AssertionRejected(
                "missing X-Ztgate-Assertion header: this app is only reachable through the ztgate gateway"
            )
        if len(token) > MAX_TOKEN_BYTES:
            raise AssertionRejected(f"X-Ztgate-Assertion is longer than {MAX_TOKEN_BYTES} bytes")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AssertionRejected(f"X-Ztgate-Assertion is not a JWT: {exc}") from exc
        if header.get("alg") != ALGORITHM:
            raise AssertionRejected(f"assertion algorithm {header.get('alg')!r} is not accepted (only {ALGORITHM})")
        key = await self._keys.key_for(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AssertionRejected("assertion expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise AssertionRejected(f"assertion is not for this app (expected audience {self._audience!r})") from exc
        except jwt.InvalidIssuerError as exc:
            raise AssertionRejected(f"assertion issuer is not {self._issuer!r}") from exc
        except jwt.InvalidSignatureError as exc:
            raise AssertionRejected("assertion signature does not verify against the gateway's keys") from exc
        except jwt.PyJWTError as exc:
            raise AssertionRejected(f"invalid assertion: {exc}") from exc
        return Identity.from_claims(claims)
