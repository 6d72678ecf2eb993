"""The built-in user directory: validation errors, atomic edits, authentication."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from gateway.auth.directory import Directory, DirectoryError, User, add_user, list_users, new_user, remove_user

# Cheap argon2id parameters keep the tests fast; production uses argon2-cffi's defaults.
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002 (argon2's name)
        self.verified.append(str(hash))
        return super().verify(hash, password)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def good_file(tmp_path: Path) -> Path:
    return write(tmp_path / "users.yaml", f"""\
# ztgate users
users:
  alice:
    password_hash: {FAST.hash("correct horse")}
    totp_secret: {SECRET}
    email: alice@example.test
    name: Alice Example
    groups: [staff, finance]
    site: berlin
    country: DE
  bob:   # contractor
    password_hash: {FAST.hash("battery staple")}
    email: bob@example.test
    disabled: true
""")


def test_load_and_authenticate(tmp_path: Path) -> None:
    directory = Directory.load(good_file(tmp_path), hasher=FAST)
    alice = directory.authenticate("alice", "correct horse")
    assert alice is not None
    assert (alice.email, alice.name, alice.groups, alice.site, alice.country) == (
        "alice@example.test", "Alice Example", ("staff", "finance"), "berlin", "DE")
    assert alice.totp_secret == SECRET
    assert directory.authenticate("Alice ", "correct horse") == alice
    assert directory.authenticate("alice", "wrong") is None
    assert directory.authenticate("bob", "battery staple") is None  # disabled
    assert directory.get("bob").name == "bob" and directory.get("bob").totp_secret is None


async def test_authenticate_async(tmp_path: Path) -> None:
    directory = Directory.load(good_file(tmp_path), hasher=FAST)
    assert (await directory.authenticate_async("alice", "correct horse")).username == "alice"
    assert await directory.authenticate_async("nobody", "x") is None


def test_unknown_and_disabled_users_still_run_the_hasher(tmp_path: Path) -> None:
    hasher = CountingHasher()
    directory = Directory.load(good_file(tmp_path), hasher=hasher)
    assert directory.authenticate("mallory", "guess") is None
    assert directory.authenticate("bob", "guess") is None
    assert len(hasher.verified) == 2
    assert hasher.verified[0].startswith("$argon2id$")


def test_secrets_stay_out_of_repr_and_public_dict(tmp_path: Path) -> None:
    alice = Directory.load(good_file(tmp_path), hasher=FAST).get("alice")
    text = repr(alice) + str(alice.public_dict())
    assert "argon2" not in text and SECRET not in text
    assert alice.public_dict()["totp"] is True


@pytest.mark.parametrize(("body", "message", "user", "line"), [
    ("users:\n  alice: [1, 2\n", "not valid YAML", None, None),
    ("people: {}\n", "one key, `users`", None, 1),
    ("users:\n  alice:\n    password_hash: plaintext\n    email: a@b.c\n", "argon2id", "alice", 3),
    ("users:\n  alice:\n    password_hash: $argon2id$x\n    email: a@b.c\n    role: admin\n", "unknown field 'role'",
     "alice", 5),
    ("users:\n  alice:\n    password_hash: $argon2id$x\n    email: nope\n", "email", "alice", 4),
    ("users:\n  alice:\n    password_hash: $argon2id$x\n    email: a@b.c\n    country: Germany\n", "ISO 3166",
     "alice", 5),
    ("users:\n  alice:\n    password_hash: $argon2id$x\n    email: a@b.c\n    totp_secret: '!!!'\n", "base32",
     "alice", 5),
    ("users:\n  alice:\n    password_hash: $argon2id$x\n    email: a@b.c\n    groups: staff\n", "groups", "alice", 5),
    ("users:\n  alice:\n    password_hash: $argon2id$x\n    email: a@b.c\n    disabled: 'no'\n", "true or false",
     "alice", 5),
    ("users:\n  Alice:\n    password_hash: $argon2id$x\n    email: a@b.c\n", "invalid username", "Alice", 2),
    ("users:\n  alice: yes\n", "mapping of fields", "alice", 2),
    ("users:\n  alice:\n    password_hash: $argon2id$x\n    email: a@b.c\n  alice:\n    email: x@y.z\n",
     "not valid YAML", None, None),
])
def test_load_errors_name_file_user_and_line(tmp_path: Path, body: str, message: str, user: str | None,
                                             line: int | None) -> None:
    path = write(tmp_path / "users.yaml", body)
    with pytest.raises(DirectoryError) as info:
        Directory.load(path, hasher=FAST)
    error = info.value
    assert message in str(error)
    assert str(path) in str(error)
    assert error.user == user
    if line is not None:
        assert error.line == line


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DirectoryError, match="does not exist"):
        Directory.load(tmp_path / "nope.yaml")


def test_empty_file_is_an_empty_directory(tmp_path: Path) -> None:
    assert len(Directory.load(write(tmp_path / "u.yaml", ""), hasher=FAST)) == 0


def test_add_list_remove_round_trip_keeps_other_entries_and_comments(tmp_path: Path) -> None:
    path = good_file(tmp_path)
    user, secret = add_user(path, "carol", "a long password", ["staff"], "carol@example.test", "paris", "FR",
                            hasher=FAST)
    assert user.totp_secret == secret and len(secret) >= 16
    text = path.read_text()
    assert "# ztgate users" in text and "# contractor" in text
    assert "a long password" not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [u.username for u in list_users(path)] == ["alice", "bob", "carol"]
    directory = Directory.load(path, hasher=FAST)
    assert directory.authenticate("carol", "a long password") == user
    assert directory.authenticate("alice", "correct horse") is not None

    removed = remove_user(path, "carol")
    assert removed.username == "carol"
    assert [u.username for u in list_users(path)] == ["alice", "bob"]
    assert "# contractor" in path.read_text()
    assert not list(tmp_path.glob(".users.yaml.tmp-*"))


def test_add_creates_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "users.yaml"
    add_user(path, "dave", "a long password", [], "dave@example.test", hasher=FAST)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (dave,) = list_users(path)
    assert (dave.site, dave.country, dave.groups) == (None, None, ())


def test_refused_edits_change_nothing(tmp_path: Path) -> None:
    path = good_file(tmp_path)
    before = path.read_bytes()
    with pytest.raises(DirectoryError, match="already exists"):
        add_user(path, "alice", "a long password", [], "x@example.test", hasher=FAST)
    with pytest.raises(DirectoryError, match="shorter than"):
        add_user(path, "erin", "short", [], "erin@example.test", hasher=FAST)
    with pytest.raises(DirectoryError, match="ISO 3166"):
        add_user(path, "erin", "a long password", [], "erin@example.test", country="Germany", hasher=FAST)
    with pytest.raises(DirectoryError, match="no such user"):
        remove_user(path, "zed")
    assert path.read_bytes() == before


def test_edits_refuse_a_broken_file(tmp_path: Path) -> None:
    path = write(tmp_path / "users.yaml", "users:\n  alice:\n    password_hash: plain\n")
    with pytest.raises(DirectoryError, match="argon2id"):
        add_user(path, "erin", "a long password", [], "erin@example.test", hasher=FAST)
    assert path.read_text() == "users:\n  alice:\n    password_hash: plain\n"


def test_in_memory_directory() -> None:
    alice, _ = new_user("alice", "demo-password", email="alice@example.test", groups=["staff"], hasher=FAST)
    directory = Directory.in_memory([alice], hasher=FAST)
    assert directory.authenticate("alice", "demo-password") == alice
    with pytest.raises(DirectoryError, match="duplicate"):
        Directory.in_memory([alice, alice], hasher=FAST)


def test_reload_if_changed(tmp_path: Path) -> None:
    path = good_file(tmp_path)
    directory = Directory.load(path, hasher=FAST)
    assert directory.reload_if_changed() is directory
    add_user(path, "carol", "a long password", [], "carol@example.test", hasher=FAST)
    reloaded = directory.reload_if_changed()
    assert reloaded is not directory and reloaded.get("carol") is not None


def test_user_is_immutable() -> None:
    user = User("a", "a@b.c", "A")
    with pytest.raises(AttributeError):
        user.email = "x"  # type: ignore[misc]


def test_oversized_password_is_refused_without_touching_the_account(tmp_path: Path) -> None:
    hasher = CountingHasher()
    directory = Directory.load(good_file(tmp_path), hasher=hasher)
    assert directory.authenticate("alice", "x" * 5000) is None
    assert len(hasher.verified) == 1  # still one (dummy) verification
