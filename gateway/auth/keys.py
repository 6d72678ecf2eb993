"""Signing keys for everything ztgate signs (session cookies, upstream assertions) and their public JWKS.

On disk, a key ring is a directory with one PEM file per private key, named `<activation-ms>-<kid>.pem`. The
newest key whose activation time has come signs. `rotate()` publishes the new key `publish_ahead` seconds before it
starts signing, because verifiers cache the JWKS (PyJWKClient refetches an unknown kid at most every 30 s), so
they already hold it when the first token arrives. Every older key stays published until `max_token_lifetime`
after its successor took over (by then nothing it signed can still be valid), then `prune()` deletes it.
Everything is derived from the file names, so several gateway processes sharing the directory agree without any
other coordination: `refresh()` re-reads the directory when its listing changed, and changes (create, rotate,
prune) are serialised with an flock.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import math
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from gateway.auth.files import write_atomic

log = logging.getLogger(__name__)

SUPPORTED_ALGORITHMS = ("ES256", "EdDSA")
DEFAULT_MAX_TOKEN_LIFETIME = 600.0
DEFAULT_PUBLISH_AHEAD = 60.0  # > PyJWKClient's 30 s refetch cooldown
_KEY_FILE = re.compile(r"^(?P<created>\d{13})-(?P<kid>[A-Za-z0-9_-]{8,64})\.pem$")
_SECRET_FILE = "shared.secret"
_LOCK_FILE = ".lock"

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class KeyRingError(Exception):
    """The key directory or a key file is unusable; names the path and how to fix it."""

    def __init__(self, path: str | os.PathLike[str], message: str, hint: str = "") -> None:
        self.path = str(path)
        self.message = message
        self.hint = hint
        super().__init__(f"{self.path}: {message}" + (f" (hint: {hint})" if hint else ""))


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    created: float  # Unix seconds when it starts (started) signing
    private_key: PrivateKey = field(repr=False)
    public_key: PublicKey = field(repr=False)
    public_jwk: dict[str, Any] = field(repr=False)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _algorithm_of(key: Any, where: str | Path) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyRingError(where, f"EC key on curve {key.curve.name}; ztgate signs ES256 (P-256) only")
        return "ES256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise KeyRingError(where, f"unsupported key type {type(key).__name__}", "use an EC P-256 or Ed25519 key")


def _public_jwk(public_key: PublicKey, algorithm: str) -> dict[str, Any]:
    if algorithm == "ES256":
        return ECAlgorithm.to_jwk(public_key, as_dict=True)
    return OKPAlgorithm.to_jwk(public_key, as_dict=True)


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint (truncated to 128 bits): stable, derived from the key itself, safe in file names."""
    required = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("crv", "kty", "x")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())[:22]


def _generate(algorithm: str) -> PrivateKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported signing algorithm {algorithm!r}; choose one of {', '.join(SUPPORTED_ALGORITHMS)}")


def _make_key(private_key: PrivateKey, created: float, where: str | Path) -> SigningKey:
    algorithm = _algorithm_of(private_key, where)
    public_key = private_key.public_key()
    jwk = _public_jwk(public_key, algorithm)
    kid = _thumbprint(jwk)
    jwk.update(kid=kid, alg=algorithm, use="sig")
    return SigningKey(kid, algorithm, created, private_key, public_key, jwk)


class KeyRing:
    """The signing keys, newest first. Use `load_or_create()` (a shared directory) or `ephemeral()` (in memory)."""

    def __init__(
        self,
        directory: Path | None,
        algorithm: str,
        max_token_lifetime: float,
        clock: Callable[[], float],
        publish_ahead: float = DEFAULT_PUBLISH_AHEAD,
    ) -> None:
        if algorithm not in SUPPORTED_ALGORITHMS:
            raise ValueError(f"unsupported signing algorithm {algorithm!r}; choose one of {', '.join(SUPPORTED_ALGORITHMS)}")
        self.directory = directory
        self.algorithm = algorithm
        self.max_token_lifetime = float(max_token_lifetime)
        self.publish_ahead = float(publish_ahead)
        self._clock = clock
        self._keys: list[SigningKey] = []  # newest first
        self._by_kid: dict[str, SigningKey] = {}
        self._listing: frozenset[str] | None = None
        self._jwks: dict[str, Any] = {"keys": []}
        self._secret_master: bytes | None = None
        # a directory the gateway cannot write (a mounted Kubernetes Secret) is rotated by whoever manages it
        self.read_only = directory is not None and not os.access(directory, os.W_OK)

    # ---- construction ---------------------------------------------------------------------------------------

    @classmethod
    def load_or_create(
        cls,
        directory: str | os.PathLike[str],
        algorithm: str = "ES256",
        *,
        max_token_lifetime: float = DEFAULT_MAX_TOKEN_LIFETIME,
        publish_ahead: float = DEFAULT_PUBLISH_AHEAD,
        clock: Callable[[], float] = time.time,
    ) -> KeyRing:
        """Load the keys in `directory` (created 0700 if missing). If there is no key, or the newest one is not
        `algorithm`, a new key is generated (older keys stay published until pruned)."""
        path = Path(directory)
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise KeyRingError(path, f"cannot create the key directory: {exc.strerror}") from exc
        if not path.is_dir():
            raise KeyRingError(path, "is not a directory", "point keys.directory at a directory")
        ring = cls(path, algorithm, max_token_lifetime, clock, publish_ahead)
        with ring._locked():
            ring._reload()
            if not ring._keys or ring._keys[0].algorithm != algorithm:
                try:
                    ring._write_new_key(ring._after_newest(ring._clock()))  # signs now, and is the newest
                except OSError as exc:
                    raise KeyRingError(path, f"cannot write a new {algorithm} key: {exc.strerror}",
                                       "make the directory writable, or mount one made by `ztgate keys init DIR`") from exc
                ring._reload()
        return ring

    @classmethod
    def ephemeral(
        cls,
        algorithm: str = "ES256",
        *,
        max_token_lifetime: float = DEFAULT_MAX_TOKEN_LIFETIME,
        publish_ahead: float = DEFAULT_PUBLISH_AHEAD,
        clock: Callable[[], float] = time.time,
    ) -> KeyRing:
        """An in-memory ring with one fresh key (the demo; single process; lost on exit)."""
        ring = cls(None, algorithm, max_token_lifetime, clock, publish_ahead)
        ring._secret_master = secrets.token_bytes(32)
        ring._install([_make_key(_generate(algorithm), ring._clock(), "<memory>")])
        return ring

    # ---- reading --------------------------------------------------------------------------------------------

    @property
    def current(self) -> SigningKey:
        """The key that signs now."""
        return self.signing_key()

    def signing_key(self, now: float | None = None) -> SigningKey:
        """The newest key whose activation time is not after `now` (keys published ahead do not sign yet)."""
        if not self._keys:
            raise KeyRingError(self.directory or "<memory>", "no signing key left",
                               "restart ztgate to create one; do not delete key files by hand")
        now = self._clock() if now is None else now
        for key in self._keys:
            if key.created <= now:
                return key
        return self._keys[-1]  # every key is in the future: this clock is behind the one that made them

    def get(self, kid: str) -> SigningKey | None:
        """A published key by kid (a dict lookup: safe on the hot path)."""
        return self._by_kid.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._by_kid

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        return tuple(self._keys)

    @property
    def algorithms(self) -> frozenset[str]:
        return frozenset(k.algorithm for k in self._keys)

    def jwks(self) -> dict[str, Any]:
        """{"keys": [...]}: public keys only, each with kid, alg and use=sig. Serve as application/json."""
        return self._jwks

    def retired_at(self, key: SigningKey) -> float | None:
        """When `key` stops (stopped) signing: its successor's activation time; None for the newest key."""
        index = self._keys.index(key)
        return None if index == 0 else self._keys[index - 1].created

    # ---- changes --------------------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Re-read the directory if another process changed it. One listdir when nothing changed.
        Returns True if the set of keys changed."""
        if self.directory is None:
            return False
        try:
            listing = frozenset(os.listdir(self.directory))
        except OSError as exc:
            raise KeyRingError(self.directory, f"cannot list the key directory: {exc.strerror}") from exc
        if listing == self._listing:
            return False
        before = [k.kid for k in self._keys]
        self._reload(listing)
        return before != [k.kid for k in self._keys]

    def rotate(self, now: float | None = None, *, publish_ahead: float | None = None) -> SigningKey:
        """Add a new key, published at once and signing from `now + publish_ahead` (pass 0 after a compromise:
        switch immediately). Returns the new key. Older keys stay published until `prune()` finds them expired."""
        now = self._clock() if now is None else now
        activation = now + (self.publish_ahead if publish_ahead is None else publish_ahead)
        activation = self._after_newest(activation)
        if self.directory is None:
            key = _make_key(_generate(self.algorithm), activation, "<memory>")
            self._install([key, *self._keys])
            return key
        with self._locked():
            self._reload()
            kid = self._write_new_key(self._after_newest(activation))
            self._reload()
        return self._by_kid[kid]

    def rotate_if_older(self, max_age: float, now: float | None = None) -> SigningKey | None:
        """Scheduled rotation, safe to call from every process (e.g. with refresh() and prune() once a minute):
        adds a key when the newest one was activated more than `max_age` ago; the check and the write happen
        under the directory lock, so only one process rotates. Returns the new key or None."""
        now = self._clock() if now is None else now
        if self.directory is None:
            return self.rotate(now) if now - self._keys[0].created > max_age else None
        if self.read_only:
            return None
        with self._locked():
            self._reload()
            if self._keys and now - self._keys[0].created <= max_age:
                return None
            kid = self._write_new_key(self._after_newest(now + self.publish_ahead))
            self._reload()
        return self._by_kid[kid]

    def prune(self, now: float | None = None) -> list[str]:
        """Remove keys that stopped signing more than `max_token_lifetime` ago. Returns the removed kids."""
        now = self._clock() if now is None else now
        if self.directory is None:
            keep = [k for k in self._keys if not self._expired(k, now)]
            removed = [k.kid for k in self._keys if k not in keep]
            self._install(keep)
            return removed
        removed: list[str] = []
        if self.read_only:
            return removed
        with self._locked():
            self._reload()
            for key in list(self._keys):
                if self._expired(key, now):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._file_of(key))
                    removed.append(key.kid)
            self._reload()
        return removed

    def shared_secret(self, purpose: str) -> bytes:
        """A 32-byte secret for `purpose` (e.g. "csrf"), the same in every process that shares the directory.
        Derived (HMAC-SHA256) from a master secret kept beside the keys, created 0600 on first use."""
        if self._secret_master is None:
            assert self.directory is not None
            self._secret_master = self._load_or_create_secret()
        return hmac.new(self._secret_master, b"ztgate/" + purpose.encode(), hashlib.sha256).digest()

    # ---- internals ------------------------------------------------------------------------------------------

    def _expired(self, key: SigningKey, now: float) -> bool:
        retired = self.retired_at(key)
        return retired is not None and now - retired > self.max_token_lifetime

    def _install(self, keys: list[SigningKey]) -> None:
        keys = sorted(keys, key=lambda k: k.created, reverse=True)
        self._keys = keys
        self._by_kid = {k.kid: k for k in keys}
        self._jwks = {"keys": [dict(k.public_jwk) for k in keys]}

    def _after_newest(self, t: float) -> float:
        """`t`, or just after the newest key if that is later: keys are ordered by creation, never tied (the file
        name keeps milliseconds)."""
        return max([t, *(k.created + 0.001 for k in self._keys)])

    def _file_of(self, key: SigningKey) -> Path:
        assert self.directory is not None
        # floored (with a microsecond of slack for float error), never rounded up: a key written to sign now must not
        # read back as created in the future, or for that instant the key before it would still sign
        return self.directory / f"{math.floor(key.created * 1000 + 0.001):013d}-{key.kid}.pem"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        assert self.directory is not None
        try:
            fd = os.open(self.directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            yield  # a read-only mount (e.g. a Kubernetes Secret): reading needs no lock; writing fails below
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _reload(self, listing: frozenset[str] | None = None) -> None:
        assert self.directory is not None
        if listing is None:
            listing = frozenset(os.listdir(self.directory))
        keys: list[SigningKey] = []
        known = {self._file_of(k).name: k for k in self._keys}
        for name in sorted(listing):
            match = _KEY_FILE.match(name)
            if not match:
                continue
            if name in known:  # key files never change in place: no need to parse them again
                keys.append(known[name])
                continue
            path = self.directory / name
            try:
                key = self._read_key(path, int(match["created"]) / 1000)
            except FileNotFoundError:
                continue  # pruned by another process between listdir and open
            if key.kid != match["kid"]:
                raise KeyRingError(path, f"the file name says kid {match['kid']} but the key's thumbprint is {key.kid}",
                                   "do not rename key files; delete it to drop the key")
            keys.append(key)
        if not keys:
            self._listing = listing
            self._install([])
            return
        self._install(keys)
        self._listing = listing

    def _read_key(self, path: Path, created: float) -> SigningKey:
        info = path.stat()
        mode = stat.S_IMODE(info.st_mode)
        # group access is fine when the group is the gateway's own: a Kubernetes Secret mounted for a non-root pod
        # reaches it only through fsGroup, and kubelet adds group-read whatever defaultMode says
        if mode & 0o007 or mode & 0o070 and info.st_gid != os.getegid():
            log.warning("key file %s is readable by group or others (mode %o); chmod 600 it", path, mode)
        try:
            private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise KeyRingError(path, f"not an unencrypted PEM private key ({exc})",
                               "remove the file or replace it with a key ztgate wrote") from exc
        return _make_key(private_key, created, path)  # type: ignore[arg-type]

    def _write_new_key(self, created: float | None = None) -> str:
        assert self.directory is not None
        key = _make_key(_generate(self.algorithm), self._clock() if created is None else created, "<new>")
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private_file(self._file_of(key), pem)
        return key.kid

    def _load_or_create_secret(self) -> bytes:
        assert self.directory is not None
        path = self.directory / _SECRET_FILE
        with self._locked():
            if not path.exists():
                try:
                    _write_private_file(path, secrets.token_bytes(32).hex().encode())
                except OSError as exc:
                    raise KeyRingError(path, f"there is no shared secret and none can be written: {exc.strerror}",
                                       "create the whole key directory with `ztgate keys init DIR` and mount that "
                                       "(every process sharing the keys needs the same shared.secret)") from exc
            text = path.read_text().strip()
        try:
            master = bytes.fromhex(text)
        except ValueError as exc:
            raise KeyRingError(path, "not a hex secret", "delete it; ztgate writes a new one") from exc
        if len(master) < 32:
            raise KeyRingError(path, "the shared secret is shorter than 32 bytes", "delete it; ztgate writes a new one")
        return master


def _write_private_file(path: Path, data: bytes) -> None:
    """Write 0600 via a temporary file and rename, so readers never see a partial file."""
    write_atomic(path, data, mode=0o600, tmp=path.with_name(f".tmp-{secrets.token_hex(6)}-{path.name}"))
