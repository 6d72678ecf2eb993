"""The built-in user directory: a YAML file of users with argon2id password hashes and TOTP secrets.

    users:
      alice:
        password_hash: $argon2id$v=19$m=65536,t=3,p=4$...
        totp_secret: JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP     # base32; optional (no TOTP step-up without it)
        email: alice@example.com
        name: Alice Example                                 # optional, defaults to the username
        groups: [staff, finance]
        site: berlin                                        # claimed work site, optional
        country: DE                                         # claimed country (ISO 3166-1 alpha-2), optional
        disabled: false

The file holds secrets: ztgate writes it 0600. Edits (`add_user`, `remove_user`) lock the file, keep every other
entry and comment, validate, and replace it atomically, so a bad edit never leaves a half-written file.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import functools
import fcntl
import io
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from gateway.auth.totp import new_secret
from gateway.auth.files import write_atomic

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
COUNTRY = re.compile(r"^[A-Z]{2}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; a cap keeps huge form posts from costing more
_FIELDS = ("password_hash", "totp_secret", "email", "name", "groups", "site", "country", "disabled")


class DirectoryError(Exception):
    """The user file (or an edit to it) is wrong: names the file, the line and the user where known."""

    def __init__(self, file: str | os.PathLike[str] | None, message: str, *, user: str | None = None,
                 line: int | None = None, hint: str = "") -> None:
        self.file = str(file) if file is not None else "<memory>"
        self.user = user
        self.line = line
        self.message = message
        self.hint = hint
        where = self.file + (f":{line}" if line is not None else "") + (f": user {user!r}" if user else "")
        super().__init__(f"{where}: {message}" + (f" (hint: {hint})" if hint else ""))


@dataclass(frozen=True, slots=True)
class User:
    username: str
    email: str
    name: str
    groups: tuple[str, ...] = ()
    site: str | None = None
    country: str | None = None
    disabled: bool = False
    totp_secret: str | None = field(default=None, repr=False)
    password_hash: str = field(default="", repr=False)

    def public_dict(self) -> dict[str, Any]:
        """Everything but the secrets (for listings, the policy context and the admin API)."""
        return {"username": self.username, "email": self.email, "name": self.name, "groups": list(self.groups),
                "site": self.site, "country": self.country, "disabled": self.disabled,
                "totp": self.totp_secret is not None}


def default_hasher() -> PasswordHasher:
    """argon2id with argon2-cffi's defaults (RFC 9106's low-memory profile)."""
    return PasswordHasher()


def new_user(username: str, password: str, *, email: str, groups: Sequence[str] = (), name: str | None = None,
             site: str | None = None, country: str | None = None, totp_secret: str | None = None,
             hasher: PasswordHasher | None = None) -> tuple[User, str]:
    """A validated User with a fresh password hash and TOTP secret; returns (user, totp_secret)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise DirectoryError(None, f"the password is shorter than {MIN_PASSWORD_LENGTH} characters", user=username)
    if len(password) > MAX_PASSWORD_LENGTH:
        raise DirectoryError(None, f"the password is longer than {MAX_PASSWORD_LENGTH} characters", user=username)
    secret = totp_secret or new_secret()
    raw = {"password_hash": (hasher or default_hasher()).hash(password), "totp_secret": secret, "email": email,
           "name": name or username, "groups": list(groups), "site": site, "country": country, "disabled": False}
    return _user_from_mapping(username, raw, None, None), secret


class Directory:
    """Users by name. Load with `Directory.load(path)` or build with `Directory.in_memory(users)`."""

    def __init__(self, users: Mapping[str, User], *, source: Path | None = None,
                 hasher: PasswordHasher | None = None, _signature: tuple[int, int, int] | None = None) -> None:
        self._users = dict(users)
        self.source = source
        self._hasher = hasher or default_hasher()
        self._signature = _signature
        # Unknown and disabled users are checked against this, so they cost what a real user costs.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, hasher: PasswordHasher | None = None) -> Directory:
        path = Path(path)
        users, signature = _read_users(path)
        return cls(users, source=path, hasher=hasher, _signature=signature)

    @classmethod
    def in_memory(cls, users: Iterable[User], *, hasher: PasswordHasher | None = None) -> Directory:
        by_name: dict[str, User] = {}
        for user in users:
            if user.username in by_name:
                raise DirectoryError(None, "duplicate user", user=user.username)
            by_name[user.username] = user
        return cls(by_name, hasher=hasher)

    def reload_if_changed(self) -> Directory:
        """This directory, or a freshly loaded one if the file changed on disk (one stat when it did not)."""
        if self.source is None:
            return self
        if _signature_of(self.source) == self._signature:
            return self
        return Directory.load(self.source, hasher=self._hasher)

    def get(self, username: str) -> User | None:
        return self._users.get(username.strip().lower())

    @property
    def users(self) -> tuple[User, ...]:
        return tuple(self._users.values())

    def __len__(self) -> int:
        return len(self._users)

    def authenticate(self, username: str, password: str) -> User | None:
        """The user if the password matches and the account is enabled, else None. Always runs one argon2
        verification, so unknown and disabled accounts take about as long as real ones. CPU-bound (tens of ms):
        from async code use `authenticate_async`."""
        user = self._users.get(username.strip().lower())
        candidate = user.password_hash if user is not None else self._dummy_hash
        if len(password) > MAX_PASSWORD_LENGTH:
            user, candidate, password = None, self._dummy_hash, ""
        try:
            ok = self._hasher.verify(candidate, password)
        except (VerificationError, InvalidHashError):
            ok = False
        if user is None or user.disabled or not ok:
            return None
        return user

    async def authenticate_async(self, username: str, password: str) -> User | None:
        """`authenticate` in a worker thread (argon2 releases the GIL), keeping the event loop responsive. The
        threads are argon2's own: in the default executor a flood of sign-in attempts delayed the security-event
        outbox and sink writes queued behind it."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_argon2_pool(), self.authenticate, username, password)


@functools.cache
def _argon2_pool() -> concurrent.futures.ThreadPoolExecutor:
    """One pool per process, shared by every Directory (a reloaded directory is a new object): as many threads as
    half the cores, so verifications cannot take every core from the proxy."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) // 2),
                                                 thread_name_prefix="ztgate-argon2")


# ---- file editing ---------------------------------------------------------------------------------------------


def list_users(path: str | os.PathLike[str]) -> list[User]:
    users, _ = _read_users(Path(path))
    return sorted(users.values(), key=lambda u: u.username)


def add_user(path: str | os.PathLike[str], username: str, password: str, groups: Sequence[str], email: str,
             site: str | None = None, country: str | None = None, *, name: str | None = None,
             hasher: PasswordHasher | None = None) -> tuple[User, str]:
    """Add a user to the file (created 0600 if missing). Returns (user, totp_secret): show the secret once."""
    path = Path(path)
    username = username.strip().lower()
    try:
        user, secret = new_user(username, password, email=email, groups=groups, name=name, site=site,
                                country=country, hasher=hasher)
    except DirectoryError as exc:
        raise DirectoryError(path, exc.message, user=exc.user, hint=exc.hint) from None
    with _edit_lock(path):
        document = _read_document(path) if path.exists() else CommentedMap(users=CommentedMap())
        if path.exists():
            _validate_document(path, document)
        users = document.setdefault("users", CommentedMap())
        if users is None:
            users = document["users"] = CommentedMap()
        if username in users:
            raise DirectoryError(path, "the user already exists", user=username,
                                 hint="remove it first, or pick another name")
        entry = CommentedMap()
        entry["password_hash"] = user.password_hash
        entry["totp_secret"] = secret
        entry["email"] = user.email
        entry["name"] = user.name
        entry["groups"] = _flow_list(user.groups)
        if user.site is not None:
            entry["site"] = user.site
        if user.country is not None:
            entry["country"] = user.country
        entry["disabled"] = False
        users[username] = entry
        _write_document(path, document)
    return user, secret


def remove_user(path: str | os.PathLike[str], username: str) -> User:
    """Remove a user from the file; returns the removed user. DirectoryError if there is no such user."""
    path = Path(path)
    username = username.strip().lower()
    with _edit_lock(path):
        if not path.exists():
            raise DirectoryError(path, "the user file does not exist", hint="add a user first")
        document = _read_document(path)
        users_by_name = _validate_document(path, document)
        if username not in users_by_name:
            raise DirectoryError(path, "no such user", user=username, hint="`ztgate users list` shows the users")
        del document["users"][username]
        _write_document(path, document)
    return users_by_name[username]


# ---- internals ------------------------------------------------------------------------------------------------


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # never fold a hash
    return yaml


def _flow_list(items: Iterable[str]) -> CommentedSeq:
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def _signature_of(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _read_document(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DirectoryError(path, "the user file does not exist",
                             hint="create it with `ztgate users add`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DirectoryError(path, f"cannot read the user file: {exc}") from None
    try:
        return _yaml().load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DirectoryError(path, f"not valid YAML: {problem}", line=line) from None


def _read_users(path: Path) -> tuple[dict[str, User], tuple[int, int, int] | None]:
    signature = _signature_of(path)
    document = _read_document(path)
    return _validate_document(path, document), signature


def _validate_document(path: Path, document: Any) -> dict[str, User]:
    if document is None:
        return {}
    if not isinstance(document, Mapping) or set(document) - {"users"}:
        raise DirectoryError(path, "the file must be a mapping with one key, `users`", line=1,
                             hint="users: {alice: {password_hash: ..., email: ...}}")
    users = document.get("users")
    if users is None:
        return {}
    if not isinstance(users, Mapping):
        raise DirectoryError(path, "`users` must be a mapping of username to user", line=_line(document, "users"))
    result: dict[str, User] = {}
    for username, raw in users.items():
        result[str(username)] = _user_from_mapping(str(username), raw, path, _line(users, username))
    return result


def _line(mapping: Any, key: Any) -> int | None:
    with contextlib.suppress(Exception):
        return int(mapping.lc.key(key)[0]) + 1
    return None


def _user_from_mapping(username: str, raw: Any, path: Path | None, line: int | None) -> User:
    def fail(message: str, hint: str = "", field_name: str | None = None) -> DirectoryError:
        field_line = _line(raw, field_name) if field_name is not None else None
        return DirectoryError(path, message, user=username, line=field_line or line, hint=hint)

    if not USERNAME.match(username):
        raise fail("invalid username", "lowercase letters, digits and . _ @ -, at most 64 characters")
    if not isinstance(raw, Mapping):
        raise fail("a user must be a mapping of fields", f"fields: {', '.join(_FIELDS)}")
    unknown = sorted(str(k) for k in raw if k not in _FIELDS)
    if unknown:
        raise fail(f"unknown field {unknown[0]!r}", f"fields: {', '.join(_FIELDS)}", unknown[0])

    password_hash = raw.get("password_hash")
    if not isinstance(password_hash, str) or not password_hash.startswith("$argon2id$"):
        raise fail("password_hash must be an argon2id hash ($argon2id$...)",
                   "set passwords with `ztgate users add`; never put a plain password here", "password_hash")
    totp_secret = raw.get("totp_secret")
    if totp_secret is not None:
        if not isinstance(totp_secret, str) or not _valid_base32(totp_secret):
            raise fail("totp_secret must be base32 of at least 80 bits", "", "totp_secret")
    email = raw.get("email")
    if not isinstance(email, str) or not EMAIL.match(email):
        raise fail("email is missing or not an address", "", "email")
    name = raw.get("name", username)
    if not isinstance(name, str) or not name.strip():
        raise fail("name must be a non-empty string", "", "name")
    groups = raw.get("groups", [])
    if groups is None:
        groups = []
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        raise fail("groups must be a list of names", "groups: [staff, finance]", "groups")
    site = raw.get("site")
    if site is not None and (not isinstance(site, str) or not site.strip()):
        raise fail("site must be a non-empty string", "", "site")
    country = raw.get("country")
    if country is not None and (not isinstance(country, str) or not COUNTRY.match(country)):
        raise fail("country must be an ISO 3166-1 alpha-2 code", "e.g. DE, US, GB", "country")
    disabled = raw.get("disabled", False)
    if not isinstance(disabled, bool):
        raise fail("disabled must be true or false", "", "disabled")
    return User(username=username, email=email, name=name, groups=tuple(groups), site=site, country=country,
                disabled=disabled, totp_secret=totp_secret.upper() if totp_secret else None,
                password_hash=password_hash)


def _valid_base32(secret: str) -> bool:
    text = secret.strip().upper()
    try:
        decoded = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        return False
    return len(decoded) >= 10


@contextlib.contextmanager
def _edit_lock(path: Path) -> Iterator[None]:
    """Serialise read-modify-write edits between processes (the CLI and a running gateway's admin API)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_document(path: Path, document: Any) -> None:
    buffer = io.StringIO()
    _yaml().dump(document, buffer)
    text = buffer.getvalue()
    _validate_document(path, _yaml().load(text))  # never write what we could not read back
    try:
        mode = stat.S_IMODE(path.stat().st_mode) & 0o600 or 0o600
    except FileNotFoundError:
        mode = 0o600
    write_atomic(path, text.encode("utf-8"), mode=mode, tmp=path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}"))
