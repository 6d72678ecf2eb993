"""Authentication building blocks: signing keys and JWKS, session and assertion tokens, the built-in directory,
TOTP, the OIDC relying party and form (CSRF) tokens. No web framework in here: the control plane and the proxy
addon call these."""

from gateway.auth.csrf import CsrfError, CsrfTokens
from gateway.auth.directory import Directory, DirectoryError, User, add_user, list_users, new_user, remove_user
from gateway.auth.guard import MemoryReplayGuard, ReplayGuard
from gateway.auth.keys import KeyRing, KeyRingError, SigningKey
from gateway.auth.oidc import LoginState, OidcConfig, OidcError, OidcIdentity, OidcProvider
from gateway.auth.tokens import (
    ASSERTION_HEADER,
    JWKS_PATH,
    SESSION_AUDIENCE,
    AssertionSigner,
    SessionClaims,
    SessionTokens,
    TokenError,
)
from gateway.auth.totp import TotpOutcome, TotpVerifier, new_secret, provisioning_uri

__all__ = [
    "ASSERTION_HEADER", "JWKS_PATH", "SESSION_AUDIENCE", "AssertionSigner", "CsrfError", "CsrfTokens", "Directory",
    "DirectoryError", "KeyRing", "KeyRingError", "LoginState", "MemoryReplayGuard", "OidcConfig", "OidcError",
    "OidcIdentity", "OidcProvider", "ReplayGuard", "SessionClaims", "SessionTokens", "SigningKey", "TokenError",
    "TotpOutcome", "TotpVerifier", "User", "add_user", "list_users", "new_secret", "new_user", "provisioning_uri",
    "remove_user",
]
