"""OpenID Connect relying party (authorization code flow with PKCE S256, state and nonce).

    provider = OidcProvider(OidcConfig.from_dict(entry, path=("identity", "oidc", i)), http_client)
    url, login = await provider.authorization_request(redirect_uri, acr_values=["mfa"], max_age=0)
    # store login.to_json() (signed short-lived cookie or the store), redirect the browser to url ...
    identity = await provider.complete(request.query_params, LoginState.from_json(saved), redirect_uri)

Every refusal raises OidcError: `reason` is a stable code, `log_message` the detail for logs (never a token or a
code), `user_message` what to show in the browser.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import jwt

from gateway.errors import ConfigError, KeyPath

DEFAULT_SCOPES = ("openid", "email", "profile")
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")
CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
_KTY_FOR_ALG = {"RS256": "RSA", "RS384": "RSA", "RS512": "RSA", "PS256": "RSA", "ES256": "EC", "ES384": "EC",
                "EdDSA": "OKP"}
_CRV_FOR_ALG = {"ES256": "P-256", "ES384": "P-384", "EdDSA": "Ed25519"}
_HASH_FOR_ALG = {"RS256": hashlib.sha256, "PS256": hashlib.sha256, "ES256": hashlib.sha256,
                 "RS384": hashlib.sha384, "ES384": hashlib.sha384, "RS512": hashlib.sha512,
                 "EdDSA": hashlib.sha512}
_USER_MESSAGES = {
    "login_expired": "The sign-in took too long. Please start again.",
    "idp_access_denied": "Sign-in was cancelled at the identity provider.",
    "acr_not_satisfied": "The identity provider did not confirm the stronger sign-in this page needs.",
}
_GENERIC_USER_MESSAGE = "Sign-in with the identity provider failed. Please try again; if it keeps failing, " \
                        "contact your administrator."


class OidcError(Exception):
    def __init__(self, reason: str, detail: str = "", *, provider: str = "", idp_error: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.provider = provider
        self.idp_error = idp_error  # the IdP's `error` code when it sent one (e.g. login_required)
        super().__init__(self.log_message)

    @property
    def log_message(self) -> str:
        where = f"oidc[{self.provider}]" if self.provider else "oidc"
        return f"{where}: {self.reason}" + (f": {self.detail}" if self.detail else "")

    @property
    def user_message(self) -> str:
        key = "idp_access_denied" if self.idp_error == "access_denied" else self.reason
        return _USER_MESSAGES.get(key, _GENERIC_USER_MESSAGE)


# ---- configuration --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OidcConfig:
    name: str
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    groups_claim: str = "groups"
    redirect_path: str = "/.ztgate/oidc/callback"
    client_auth_method: str = "client_secret_basic"
    allowed_algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway_seconds: int = 60
    login_timeout_seconds: int = 600
    display_name: str = ""

    FIELDS = ("name", "display_name", "issuer", "client_id", "client_secret", "scopes", "groups_claim",
              "redirect_path", "client_auth_method", "allowed_algorithms", "leeway_seconds",
              "login_timeout_seconds")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: KeyPath = ()) -> OidcConfig:
        """Validate one `identity.oidc[i]` entry; raises ConfigError(path + (key,), message, hint). With the
        default path the error's path is relative to the entry (the config loader prefixes it)."""
        path = tuple(path)
        if not isinstance(d, Mapping):
            raise ConfigError(path, "an OIDC provider must be a mapping", "name, issuer, client_id, client_secret")
        for key in d:
            if key not in cls.FIELDS:
                raise ConfigError((*path, str(key)), f"unknown field {key!r}", f"fields: {', '.join(cls.FIELDS)}")

        def text(key: str, *, required: bool = True, default: str = "") -> str:
            value = d.get(key, None)
            if value is None:
                if required:
                    raise ConfigError((*path, key), f"{key} is required")
                return default
            if not isinstance(value, str) or not value.strip():
                raise ConfigError((*path, key), f"{key} must be a non-empty string")
            return value.strip()

        def integer(key: str, default: int, low: int, high: int) -> int:
            value = d.get(key, default)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError((*path, key), f"{key} must be an integer between {low} and {high}")
            return value

        def strings(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            value = d.get(key, None)
            if value is None:
                return default
            if isinstance(value, str):
                value = value.split()
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                raise ConfigError((*path, key), f"{key} must be a non-empty list of strings")
            return tuple(value)

        name = text("name")
        if not all(c.isalnum() or c in "-_" for c in name):
            raise ConfigError((*path, "name"), "name may contain letters, digits, - and _ only",
                              "it appears in URLs and logs, e.g. `corp-sso`")
        issuer = text("issuer")
        _check_issuer(issuer, (*path, "issuer"))
        scopes = strings("scopes", DEFAULT_SCOPES)
        if "openid" not in scopes:
            raise ConfigError((*path, "scopes"), "scopes must include `openid`", "scopes: [openid, email, profile]")
        groups_claim = text("groups_claim", required=False, default="groups")
        if any(not part for part in groups_claim.split(".")):
            raise ConfigError((*path, "groups_claim"), "groups_claim is a claim name or dotted path",
                              "e.g. groups, or realm_access.roles")
        redirect_path = text("redirect_path", required=False, default="/.ztgate/oidc/callback")
        if not redirect_path.startswith("/") or "?" in redirect_path or "#" in redirect_path:
            raise ConfigError((*path, "redirect_path"), "redirect_path must be an absolute path without query",
                              "/.ztgate/oidc/callback")
        method = text("client_auth_method", required=False, default="client_secret_basic")
        if method not in CLIENT_AUTH_METHODS:
            raise ConfigError((*path, "client_auth_method"), f"unsupported client_auth_method {method!r}",
                              f"one of {', '.join(CLIENT_AUTH_METHODS)}")
        algorithms = strings("allowed_algorithms", DEFAULT_ALGORITHMS)
        for alg in algorithms:
            if alg not in ALLOWED_ALGORITHMS:
                raise ConfigError((*path, "allowed_algorithms"), f"algorithm {alg!r} is not allowed for ID tokens",
                                  f"asymmetric algorithms only: {', '.join(ALLOWED_ALGORITHMS)}")
        return cls(
            name=name, issuer=issuer, client_id=text("client_id"), client_secret=text("client_secret"),
            scopes=scopes, groups_claim=groups_claim, redirect_path=redirect_path, client_auth_method=method,
            allowed_algorithms=algorithms, leeway_seconds=integer("leeway_seconds", 60, 0, 300),
            login_timeout_seconds=integer("login_timeout_seconds", 600, 30, 3600),
            display_name=text("display_name", required=False, default=name),
        )


def _check_issuer(issuer: str, path: KeyPath) -> None:
    parsed = urllib.parse.urlsplit(issuer)
    if parsed.scheme not in ("https", "http") or not parsed.hostname or parsed.query or parsed.fragment:
        raise ConfigError(path, "issuer must be an https URL without query or fragment",
                          "copy it from the provider's /.well-known/openid-configuration")
    if parsed.scheme == "http" and not _is_loopback(parsed.hostname):
        raise ConfigError(path, "issuer must use https (plain http is allowed for loopback test providers only)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---- login state and identity -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginState:
    """What the callback needs to finish a login. Keep it server-side or in a signed, short-lived cookie: it holds
    the PKCE verifier."""

    provider: str
    state: str
    nonce: str
    code_verifier: str = field(repr=False)
    redirect_uri: str
    created_at: float
    acr_values: tuple[str, ...] | None = None
    max_age: int | None = None
    prompt: str | None = None
    return_to: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> LoginState:
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            for key in ("provider", "state", "nonce", "code_verifier", "redirect_uri"):
                if not isinstance(data.get(key), str) or not data[key]:
                    raise TypeError(f"{key} missing")
            if not isinstance(data.get("created_at"), (int, float)):
                raise TypeError("created_at missing")
            acr = data.get("acr_values")
            if acr is not None and (not isinstance(acr, list) or not all(isinstance(a, str) for a in acr)):
                raise TypeError("acr_values")
            max_age = data.get("max_age")
            if max_age is not None and (not isinstance(max_age, int) or isinstance(max_age, bool)):
                raise TypeError("max_age")
            for key in ("prompt", "return_to"):
                if data.get(key) is not None and not isinstance(data[key], str):
                    raise TypeError(key)
            return cls(
                provider=data["provider"], state=data["state"], nonce=data["nonce"],
                code_verifier=data["code_verifier"], redirect_uri=data["redirect_uri"],
                created_at=float(data["created_at"]), acr_values=tuple(acr) if acr is not None else None,
                max_age=max_age, prompt=data.get("prompt"), return_to=data.get("return_to"),
            )
        except (ValueError, TypeError) as exc:
            raise OidcError("bad_login_state", f"unreadable login state ({exc})") from None


@dataclass(frozen=True)
class OidcIdentity:
    provider: str
    issuer: str
    sub: str
    email: str | None
    email_verified: bool | None
    name: str | None
    groups: tuple[str, ...]
    acr: str | None
    amr: tuple[str, ...]
    auth_time: int | None
    claims: Mapping[str, Any] = field(repr=False)  # the verified ID token claims, e.g. for site/country claims


def claim_at_path(claims: Mapping[str, Any], dotted: str) -> Any:
    """`realm_access.roles` -> claims["realm_access"]["roles"]; a claim whose own name contains dots wins."""
    if dotted in claims:
        return claims[dotted]
    value: Any = claims
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _token_hash(alg: str, value: str) -> str:
    digest = _HASH_FOR_ALG[alg](value.encode("ascii")).digest()
    return _b64url(digest[: len(digest) // 2])


# ---- the relying party --------------------------------------------------------------------------------------------


class OidcProvider:
    def __init__(self, config: OidcConfig, http: httpx.AsyncClient, *, metadata_max_age: float = 3600.0,
                 timeout: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._http = http
        self._metadata_max_age = metadata_max_age
        self._timeout = timeout
        self._clock = clock
        self._metadata: dict[str, Any] | None = None
        self._metadata_fetched = 0.0
        self._jwks: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.config.name

    def _error(self, reason: str, detail: str = "", idp_error: str | None = None) -> OidcError:
        return OidcError(reason, detail, provider=self.config.name, idp_error=idp_error)

    def invalidate(self) -> None:
        """Forget discovery and keys; the next call fetches them again."""
        self._metadata = None
        self._jwks = None

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (fetched lazily, cached for metadata_max_age)."""
        if self._metadata is not None and self._clock() - self._metadata_fetched < self._metadata_max_age:
            return self._metadata
        async with self._lock:
            if self._metadata is not None and self._clock() - self._metadata_fetched < self._metadata_max_age:
                return self._metadata
            url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            document = await self._get_json(url, "discovery_failed")
            if document.get("issuer") != self.config.issuer:
                raise self._error("discovery_failed", f"discovery says issuer {document.get('issuer')!r}, "
                                                      f"configured {self.config.issuer!r}")
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(document.get(key), str) or not document[key].startswith(("https://", "http://")):
                    raise self._error("discovery_failed", f"discovery has no usable {key}")
            methods = document.get("code_challenge_methods_supported")
            if isinstance(methods, list) and "S256" not in methods:
                raise self._error("discovery_failed", "the provider does not support PKCE S256")
            self._metadata = document
            self._metadata_fetched = self._clock()
            self._jwks = None
            return document

    async def authorization_request(
        self,
        redirect_uri: str,
        *,
        acr_values: Sequence[str] | None = None,
        max_age: int | None = None,
        prompt: str | None = None,
        return_to: str | None = None,
        login_hint: str | None = None,
    ) -> tuple[str, LoginState]:
        """The URL to send the browser to, and the LoginState to keep until the callback."""
        metadata = await self.metadata()
        verifier = _b64url(secrets.token_bytes(48))
        login = LoginState(
            provider=self.config.name, state=_b64url(secrets.token_bytes(24)), nonce=_b64url(secrets.token_bytes(24)),
            code_verifier=verifier, redirect_uri=redirect_uri, created_at=self._clock(),
            acr_values=tuple(acr_values) if acr_values else None, max_age=max_age, prompt=prompt,
            return_to=return_to,
        )
        params = {
            "response_type": "code", "client_id": self.config.client_id, "redirect_uri": redirect_uri,
            "scope": " ".join(self.config.scopes), "state": login.state, "nonce": login.nonce,
            "code_challenge": _b64url(hashlib.sha256(verifier.encode("ascii")).digest()),
            "code_challenge_method": "S256",
        }
        if acr_values:
            params["acr_values"] = " ".join(acr_values)
        if max_age is not None:
            params["max_age"] = str(int(max_age))
        if prompt:
            params["prompt"] = prompt
        if login_hint:
            params["login_hint"] = login_hint
        endpoint = metadata["authorization_endpoint"]
        separator = "&" if urllib.parse.urlsplit(endpoint).query else "?"
        return endpoint + separator + urllib.parse.urlencode(params), login

    async def complete(self, params: Mapping[str, str], state: LoginState, redirect_uri: str) -> OidcIdentity:
        """Finish the login from the callback's query parameters: check state, exchange the code (PKCE),
        verify the ID token. Returns the identity or raises OidcError."""
        if state.provider != self.config.name:
            raise self._error("state_mismatch", f"login state belongs to provider {state.provider!r}")
        if self._clock() - state.created_at > self.config.login_timeout_seconds:
            raise self._error("login_expired", "the login state is older than login_timeout_seconds")
        error = params.get("error")
        if error:
            description = str(params.get("error_description", ""))[:200]
            raise self._error("idp_error", f"{str(error)[:64]}: {description}".rstrip(": "), idp_error=str(error)[:64])
        returned_state = params.get("state") or ""
        if not hmac.compare_digest(returned_state.encode(), state.state.encode()):
            raise self._error("state_mismatch", "the callback's state does not match the login")
        returned_issuer = params.get("iss")
        if returned_issuer is not None and returned_issuer != self.config.issuer:  # RFC 9207 mix-up defence
            raise self._error("issuer_mismatch", f"callback iss {returned_issuer!r}")
        if redirect_uri != state.redirect_uri:
            raise self._error("redirect_mismatch", "the callback URL differs from the one the login started with")
        code = params.get("code")
        if not code:
            raise self._error("missing_code", "the callback has no code")

        tokens = await self._exchange_code(code, state)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise self._error("no_id_token", "the token response has no id_token (is `openid` in scopes?)")
        access_token = tokens.get("access_token")
        claims, alg = await self._verify_id_token(id_token)
        return self._identity(claims, alg, state, access_token if isinstance(access_token, str) else None)

    # ---- internals ------------------------------------------------------------------------------------------

    async def _get_json(self, url: str, reason: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url, timeout=self._timeout, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise self._error(reason, f"GET {url}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise self._error(reason, f"GET {url}: HTTP {response.status_code}")
        try:
            document = response.json()
        except ValueError:
            raise self._error(reason, f"GET {url}: not JSON") from None
        if not isinstance(document, dict):
            raise self._error(reason, f"GET {url}: not a JSON object")
        return document

    async def _exchange_code(self, code: str, state: LoginState) -> dict[str, Any]:
        metadata = await self.metadata()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": state.redirect_uri,
                "code_verifier": state.code_verifier}
        headers = {"Accept": "application/json"}
        if self.config.client_auth_method == "client_secret_basic":
            # RFC 6749 2.3.1: form-encode id and secret before base64.
            user = urllib.parse.quote(self.config.client_id, safe="")
            password = urllib.parse.quote(self.config.client_secret, safe="")
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        else:
            form.update(client_id=self.config.client_id, client_secret=self.config.client_secret)
        url = metadata["token_endpoint"]
        try:
            response = await self._http.post(url, data=form, headers=headers, timeout=self._timeout)
        except httpx.HTTPError as exc:
            self.invalidate()
            raise self._error("token_endpoint_unreachable", f"POST {url}: {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            if response.status_code >= 500:
                self.invalidate()
            idp_error = str(body.get("error"))[:64] if isinstance(body, dict) and body.get("error") else None
            raise self._error("token_exchange_failed", f"POST {url}: HTTP {response.status_code}"
                              + (f" error={idp_error}" if idp_error else ""), idp_error=idp_error)
        return body

    async def _jwk_set(self, refetch: bool) -> dict[str, Any]:
        if self._jwks is None or refetch:
            metadata = await self.metadata()
            try:
                document = await self._get_json(metadata["jwks_uri"], "jwks_unavailable")
            except OidcError:
                self.invalidate()
                raise
            keys = document.get("keys")
            if not isinstance(keys, list):
                raise self._error("jwks_unavailable", "the JWKS has no `keys` list")
            self._jwks = {"keys": [k for k in keys if isinstance(k, dict)]}
        return self._jwks

    async def _signing_key(self, kid: str | None, alg: str) -> Any:
        refetched = False
        while True:
            jwks = await self._jwk_set(refetch=refetched)
            candidates = [k for k in jwks["keys"] if self._usable(k, alg) and (kid is None or k.get("kid") == kid)]
            if len(candidates) == 1:
                jwk_data = candidates[0]
                break
            if len(candidates) > 1:
                raise self._error("ambiguous_key", f"{len(candidates)} keys match kid={kid!r} alg={alg}")
            if refetched:
                raise self._error("unknown_key", f"no {alg} key with kid={kid!r} in the provider's JWKS")
            refetched = True  # the provider may have rotated: fetch its keys once more
        if jwk_data.get("alg") not in (None, alg):
            raise self._error("alg_mismatch", f"the token says {alg}, key {kid!r} is for {jwk_data.get('alg')}")
        try:
            return jwt.PyJWK(jwk_data, algorithm=alg).key
        except jwt.PyJWTError as exc:
            raise self._error("unknown_key", f"key {kid!r} is unusable: {exc}") from None

    @staticmethod
    def _usable(jwk_data: Mapping[str, Any], alg: str) -> bool:
        if jwk_data.get("kty") != _KTY_FOR_ALG[alg] or jwk_data.get("use", "sig") != "sig":
            return False
        crv = _CRV_FOR_ALG.get(alg)
        return crv is None or jwk_data.get("crv") == crv

    async def _verify_id_token(self, id_token: str) -> tuple[dict[str, Any], str]:
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as exc:
            raise self._error("malformed_id_token", str(exc)) from None
        alg = header.get("alg")
        if alg not in self.config.allowed_algorithms:
            raise self._error("alg_not_allowed", f"ID token alg {alg!r}; allowed: "
                              f"{', '.join(self.config.allowed_algorithms)}")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise self._error("malformed_id_token", "kid is not a string")
        key = await self._signing_key(kid, alg)
        try:
            claims = jwt.decode(
                id_token, key, algorithms=[alg], audience=self.config.client_id, issuer=self.config.issuer,
                leeway=self.config.leeway_seconds,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError:
            raise self._error("token_expired", "the ID token has expired") from None
        except jwt.ImmatureSignatureError:
            raise self._error("token_not_yet_valid", "the ID token's iat/nbf is in the future") from None
        except jwt.InvalidAudienceError as exc:
            raise self._error("wrong_audience", f"ID token aud does not include our client_id ({exc})") from None
        except jwt.InvalidIssuerError:
            raise self._error("wrong_issuer", "ID token iss is not the configured issuer") from None
        except jwt.InvalidSignatureError:
            raise self._error("bad_signature", "the ID token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise self._error("missing_claim", str(exc)) from None
        except jwt.PyJWTError as exc:
            raise self._error("malformed_id_token", str(exc)) from None
        return claims, alg

    def _identity(self, claims: dict[str, Any], alg: str, state: LoginState, access_token: str | None) -> OidcIdentity:
        audience = claims["aud"]
        azp = claims.get("azp")
        if isinstance(audience, list) and len(audience) > 1 and azp is None:
            raise self._error("wrong_azp", "several audiences and no azp")
        if azp is not None and azp != self.config.client_id:
            raise self._error("wrong_azp", f"azp {azp!r} is not our client_id")
        nonce = claims.get("nonce")
        if not isinstance(nonce, str):
            raise self._error("nonce_missing", "the ID token has no nonce")
        if not hmac.compare_digest(nonce.encode(), state.nonce.encode()):
            raise self._error("nonce_mismatch", "the ID token's nonce is not this login's")
        at_hash = claims.get("at_hash")
        if at_hash is not None and access_token is not None:
            if not hmac.compare_digest(str(at_hash).encode(), _token_hash(alg, access_token).encode()):
                raise self._error("at_hash_mismatch", "at_hash does not match the access token")
        auth_time = claims.get("auth_time")
        if auth_time is not None and (not isinstance(auth_time, (int, float)) or isinstance(auth_time, bool)):
            raise self._error("invalid_claim", "auth_time is not a number")
        auth_time = int(auth_time) if auth_time is not None else None
        if state.max_age is not None:
            if auth_time is None:
                raise self._error("auth_too_old", "max_age was requested but the ID token has no auth_time")
            if self._clock() - auth_time > state.max_age + self.config.leeway_seconds:
                raise self._error("auth_too_old", f"authenticated {int(self._clock() - auth_time)} s ago, "
                                                  f"max_age {state.max_age}")
        acr = claims.get("acr")
        acr = acr if isinstance(acr, str) else None
        if state.acr_values and acr not in state.acr_values:
            raise self._error("acr_not_satisfied", f"asked for acr in {list(state.acr_values)}, got {acr!r}")
        amr = claims.get("amr")
        amr_values = tuple(m for m in amr if isinstance(m, str)) if isinstance(amr, list) else ()
        groups_value = claim_at_path(claims, self.config.groups_claim)
        if isinstance(groups_value, str):
            groups: tuple[str, ...] = (groups_value,)
        elif isinstance(groups_value, list):
            groups = tuple(g for g in groups_value if isinstance(g, str))
        else:
            groups = ()
        email = claims.get("email")
        verified = claims.get("email_verified")
        name = claims.get("name") or claims.get("preferred_username")
        return OidcIdentity(
            provider=self.config.name, issuer=claims["iss"], sub=str(claims["sub"]),
            email=email if isinstance(email, str) else None,
            email_verified=verified if isinstance(verified, bool) else None,
            name=name if isinstance(name, str) else None, groups=groups, acr=acr, amr=amr_values,
            auth_time=auth_time, claims=claims,
        )
