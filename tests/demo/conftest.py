"""Fixtures for the demo upstream: a real ES256 key, a JWKS served over real HTTP, the app on a free port."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.demo import UpstreamServer, serve

JWKS_PATH = "/.well-known/ztgate/jwks.json"


def public_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict:
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=kid, use="sig", alg="ES256")
    return jwk


@dataclass
class FakeGatewayKeys:
    """Stands in for the gateway's key manager: a signing key and the JWKS that publishes it."""

    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    kid: str = "test-1"
    fetches: int = 0

    def jwks(self) -> dict:
        return {"keys": [public_jwk(self.key, self.kid)]}

    def rotate(self, kid: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = kid

    def mint(self, *, key: ec.EllipticCurvePrivateKey | None = None, kid: str | None = None, **overrides) -> str:
        now = int(time.time())
        claims = {
            "iss": "https://gw.test",
            "aud": "demo",
            "sub": "u-alice",
            "email": "alice@example.com",
            "name": "Alice Example",
            "groups": ["engineering", "vpn-users"],
            "acr": "urn:ztgate:acr:mfa",
            "amr": ["pwd", "otp"],
            "ztgate_state": "active",
            "iat": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, key or self.key, algorithm="ES256", headers={"kid": kid or self.kid})


async def start_uvicorn(app) -> tuple[uvicorn.Server, str]:
    """Runs `app` on a free loopback port inside the test's event loop (reusing the demo's embeddable server)."""
    import asyncio
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    server = UpstreamServer(uvicorn.Config(app, lifespan="off", log_level="warning"))
    server.sock = sock
    server.task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, server.url


@pytest.fixture
def gw_keys() -> FakeGatewayKeys:
    return FakeGatewayKeys()


@pytest.fixture
async def jwks_url(gw_keys: FakeGatewayKeys) -> AsyncIterator[str]:
    async def jwks(_request: Request) -> JSONResponse:
        gw_keys.fetches += 1
        return JSONResponse(gw_keys.jwks())

    server, url = await start_uvicorn(Starlette(routes=[Route(JWKS_PATH, jwks)]))
    yield url + JWKS_PATH
    await server.stop()


@pytest.fixture
async def demo(jwks_url: str) -> AsyncIterator[UpstreamServer]:
    server = await serve("127.0.0.1", 0, jwks_url=jwks_url, audience="demo", issuer="https://gw.test")
    yield server
    await server.stop()


@pytest.fixture
def auth(gw_keys: FakeGatewayKeys) -> Callable[..., dict[str, str]]:
    """Headers that carry a fresh, valid assertion (claims can be overridden)."""

    def headers(**overrides) -> dict[str, str]:
        return {"X-Ztgate-Assertion": gw_keys.mint(**overrides)}

    return headers
