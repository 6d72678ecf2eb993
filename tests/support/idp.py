"""A real OpenID provider for tests: a Starlette app served by uvicorn on a free loopback port (background thread).

    with TestIdp() as idp:
        idp.set_user("u-1", email="alice@example.com", groups=["staff"], acr="pwd", amr=["pwd"])
        ... point an OidcConfig at idp.issuer / idp.client_id / idp.client_secret ...
        idp.authorize_requests[-1]   # what the relying party asked for (nonce, prompt, max_age, acr_values, ...)
        idp.set_faults(Fault.WRONG_ISSUER)   # make the next ID tokens misbehave

/authorize approves at once (no login page) and redirects back with code and state; /token checks client
authentication, the redirect_uri and the PKCE verifier, and returns an RS256 ID token. It is strict the way a
real provider is, so relying-party bugs show up as failures here.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route


class Fault(enum.StrEnum):
    """Ways the provider can misbehave. All but the discovery/token ones change the next ID tokens."""

    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    MULTI_AUDIENCE_NO_AZP = "multi_audience_no_azp"
    EXPIRED = "expired"
    FUTURE_IAT = "future_iat"
    BAD_SIGNATURE = "bad_signature"
    MISSING_NONCE = "missing_nonce"
    WRONG_NONCE = "wrong_nonce"
    ALG_NONE = "alg_none"
    HS256_WITH_PUBLIC_KEY = "hs256_with_public_key"  # the classic key-confusion attack
    UNPUBLISHED_KEY = "unpublished_key"  # signed by a key the JWKS does not contain
    BAD_AT_HASH = "bad_at_hash"
    IGNORE_MAX_AGE = "ignore_max_age"  # keeps an old auth_time although max_age/prompt=login asked for a new one
    IGNORE_ACR = "ignore_acr"  # does not step up to the requested acr
    WRONG_CALLBACK_ISSUER = "wrong_callback_issuer"  # RFC 9207 `iss` on the redirect names another issuer
    DISCOVERY_DOWN = "discovery_down"  # /.well-known/openid-configuration answers 503
    TOKEN_ENDPOINT_ERROR = "token_endpoint_error"  # /token answers 500


@dataclass
class IdpUser:
    sub: str
    email: str | None
    groups: list[str]
    acr: str
    amr: list[str]
    name: str | None
    auth_time: int
    extra_claims: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Grant:
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    user: IdpUser
    acr: str
    auth_time: int
    issued: float


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class _RsaKey:
    def __init__(self) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(8)
        jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        jwk.update(kid=self.kid, alg="RS256", use="sig")
        self.public_jwk = jwk
        self.public_pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class ThreadedServer:
    """Serve an ASGI app with uvicorn on a free 127.0.0.1 port in a daemon thread (for tests)."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="test-http-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test HTTP server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TestIdp:
    __test__ = False  # not a pytest test class

    def __init__(self, *, client_id: str = "ztgate-test", client_secret: str | None = None,
                 client_auth: str = "any", redirect_uris: Iterable[str] | None = None,
                 id_token_lifetime: int = 300) -> None:
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.client_auth = client_auth  # "client_secret_basic" | "client_secret_post" | "any"
        self.redirect_uris = set(redirect_uris) if redirect_uris is not None else None
        self.id_token_lifetime = id_token_lifetime
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[dict[str, str]] = []  # form fields minus secrets, plus "client_auth"
        self.faults: set[Fault] = set()
        self._lock = threading.Lock()
        self._keys = [_RsaKey()]
        self._grants: dict[str, _Grant] = {}
        self._user = IdpUser("user-1", "user@example.com", [], "pwd", ["pwd"], "Test User", int(time.time()))
        self._server: ThreadedServer | None = None
        self.port = 0

    # ---- control from the test ------------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_user(self, sub: str, email: str | None = None, groups: Iterable[str] = (), acr: str = "pwd",
                 amr: Iterable[str] = ("pwd",), *, name: str | None = None, auth_time: int | None = None,
                 extra_claims: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            self._user = IdpUser(sub, email, list(groups), acr, list(amr), name,
                                 int(time.time()) if auth_time is None else auth_time, dict(extra_claims or {}))

    def set_faults(self, *faults: Fault) -> None:
        with self._lock:
            self.faults = set(faults)

    def clear_faults(self) -> None:
        self.set_faults()

    def rotate_key(self, *, keep_old: bool = False) -> str:
        """Sign with a new key from now on; publish it (and drop the old one unless keep_old). Returns the kid."""
        key = _RsaKey()
        with self._lock:
            self._keys = [key, *self._keys] if keep_old else [key]
        return key.kid

    @property
    def current_kid(self) -> str:
        return self._keys[0].kid

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> TestIdp:
        self._server = ThreadedServer(self._app())
        self._server.start()
        self.port = self._server.port
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.stop()

    # ---- the provider ---------------------------------------------------------------------------------------

    def _app(self) -> Starlette:
        return Starlette(routes=[
            Route("/.well-known/openid-configuration", self._discovery),
            Route("/jwks", self._jwks),
            Route("/authorize", self._authorize),
            Route("/token", self._token, methods=["POST"]),
        ])

    async def _discovery(self, request: Request) -> Response:
        if Fault.DISCOVERY_DOWN in self.faults:
            return PlainTextResponse("unavailable", status_code=503)
        return JSONResponse({
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "claims_parameter_supported": False,
            "authorization_response_iss_parameter_supported": True,
        })

    async def _jwks(self, request: Request) -> Response:
        with self._lock:
            return JSONResponse({"keys": [k.public_jwk for k in self._keys]})

    async def _authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        with self._lock:
            self.authorize_requests.append(params)
            faults = set(self.faults)
            user = self._user
        if params.get("client_id") != self.client_id:
            return PlainTextResponse("unknown client_id", status_code=400)
        redirect_uri = params.get("redirect_uri", "")
        if self.redirect_uris is not None and redirect_uri not in self.redirect_uris:
            return PlainTextResponse("redirect_uri not registered", status_code=400)
        if not redirect_uri.startswith(("http://127.0.0.1", "http://localhost", "https://")):
            return PlainTextResponse("bad redirect_uri", status_code=400)

        def back(**values: str) -> Response:
            if "state" in params:
                values["state"] = params["state"]
            values["iss"] = self.issuer + ("/other" if Fault.WRONG_CALLBACK_ISSUER in faults else "")
            sep = "&" if "?" in redirect_uri else "?"
            return RedirectResponse(redirect_uri + sep + urllib.parse.urlencode(values), status_code=302)

        if params.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if "openid" not in params.get("scope", "").split():
            return back(error="invalid_scope")
        if params.get("code_challenge_method") != "S256" or len(params.get("code_challenge", "")) < 43:
            return back(error="invalid_request", error_description="PKCE S256 required")

        now = int(time.time())
        auth_time = user.auth_time
        max_age = params.get("max_age")
        reauthenticate = "login" in params.get("prompt", "").split() or (
            max_age is not None and max_age.isdigit() and now - auth_time > int(max_age))
        if reauthenticate and Fault.IGNORE_MAX_AGE not in faults:
            auth_time = now
        acr = user.acr
        requested_acr = params.get("acr_values", "").split()
        if requested_acr and Fault.IGNORE_ACR not in faults:
            acr = requested_acr[0]
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._grants[code] = _Grant(redirect_uri, params["code_challenge"], params.get("nonce"), user, acr,
                                        auth_time, time.time())
        return back(code=code)

    def _client_authenticated(self, request: Request, form: Mapping[str, str]) -> str | None:
        header = request.headers.get("authorization", "")
        if header.startswith("Basic ") and self.client_auth in ("any", "client_secret_basic"):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return None
            if (urllib.parse.unquote(user) == self.client_id
                    and hmac.compare_digest(urllib.parse.unquote(password), self.client_secret)):
                return "client_secret_basic"
            return None
        if "client_secret" in form and self.client_auth in ("any", "client_secret_post"):
            if form.get("client_id") == self.client_id and hmac.compare_digest(form["client_secret"],
                                                                                 self.client_secret):
                return "client_secret_post"
        return None

    async def _token(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        method = self._client_authenticated(request, form)
        with self._lock:
            self.token_requests.append({**{k: v for k, v in form.items() if k != "client_secret"},
                                        "client_auth": method or "failed"})
            faults = set(self.faults)
            grant = self._grants.pop(form.get("code", ""), None)
            key = self._keys[0]
        if Fault.TOKEN_ENDPOINT_ERROR in faults:
            return JSONResponse({"error": "server_error"}, status_code=500)
        if method is None:
            return JSONResponse({"error": "invalid_client"}, status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="test-idp"'})
        if form.get("grant_type") != "authorization_code":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if grant is None or time.time() - grant.issued > 60:
            return JSONResponse({"error": "invalid_grant", "error_description": "unknown or used code"},
                                status_code=400)
        if form.get("redirect_uri") != grant.redirect_uri:
            return JSONResponse({"error": "invalid_grant", "error_description": "redirect_uri differs"},
                                status_code=400)
        verifier = form.get("code_verifier", "")
        if not 43 <= len(verifier) <= 128 or not hmac.compare_digest(
                _b64url(hashlib.sha256(verifier.encode()).digest()), grant.code_challenge):
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE verification failed"},
                                status_code=400)
        access_token = secrets.token_urlsafe(32)
        id_token = self._id_token(grant, access_token, key, faults)
        return JSONResponse({"access_token": access_token, "token_type": "Bearer", "expires_in": 300,
                             "id_token": id_token}, headers={"Cache-Control": "no-store"})

    def _id_token(self, grant: _Grant, access_token: str, key: _RsaKey, faults: set[Fault]) -> str:
        now = int(time.time())
        user = grant.user
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": user.sub, "aud": self.client_id, "iat": now,
            "exp": now + self.id_token_lifetime, "auth_time": grant.auth_time, "acr": grant.acr, "amr": user.amr,
            "groups": user.groups, "at_hash": _b64url(hashlib.sha256(access_token.encode()).digest()[:16]),
        }
        if grant.nonce is not None:
            claims["nonce"] = grant.nonce
        if user.email is not None:
            claims.update(email=user.email, email_verified=True)
        if user.name is not None:
            claims["name"] = user.name
        claims.update(user.extra_claims)
        if Fault.WRONG_ISSUER in faults:
            claims["iss"] = self.issuer + "/other"
        if Fault.WRONG_AUDIENCE in faults:
            claims["aud"] = "some-other-client"
        if Fault.MULTI_AUDIENCE_NO_AZP in faults:
            claims["aud"] = [self.client_id, "some-other-client"]
            claims.pop("azp", None)
        if Fault.EXPIRED in faults:
            claims.update(iat=now - 7200, exp=now - 3600)
        if Fault.FUTURE_IAT in faults:
            claims["iat"] = now + 3600
        if Fault.MISSING_NONCE in faults:
            claims.pop("nonce", None)
        if Fault.WRONG_NONCE in faults:
            claims["nonce"] = _b64url(secrets.token_bytes(24))
        if Fault.BAD_AT_HASH in faults:
            claims["at_hash"] = _b64url(secrets.token_bytes(16))

        if Fault.ALG_NONE in faults:
            header = {"alg": "none", "typ": "JWT", "kid": key.kid}
            return f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}."
        if Fault.HS256_WITH_PUBLIC_KEY in faults:
            header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
            signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
            mac = hmac.new(key.public_pem, signing_input.encode(), hashlib.sha256).digest()
            return f"{signing_input}.{_b64url(mac)}"
        if Fault.UNPUBLISHED_KEY in faults:
            key = _RsaKey()
        token = jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})
        if Fault.BAD_SIGNATURE in faults:
            head, payload, signature = token.split(".")
            raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
            raw[10] ^= 0xFF
            token = f"{head}.{payload}.{_b64url(bytes(raw))}"
        return token
