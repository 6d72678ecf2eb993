"""KeyRing: files, JWKS, rotation and pruning, agreement between processes sharing the directory."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.auth.keys import KeyRing, KeyRingError

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _key_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.pem"))


def test_creates_one_private_key_file_per_key(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    ring = KeyRing.load_or_create(directory)
    files = _key_files(directory)
    assert len(files) == 1
    assert ring.current.kid in files[0].name
    assert _mode(files[0]) == 0o600
    assert _mode(directory) == 0o700
    assert ring.current.algorithm == "ES256"
    assert files[0].read_text().startswith("-----BEGIN PRIVATE KEY-----")


def test_jwks_publishes_public_keys_only(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    (jwk,) = ring.jwks()["keys"]
    assert jwk["kid"] == ring.current.kid
    assert jwk["alg"] == "ES256"
    assert jwk["use"] == "sig"
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256"
    assert "d" not in jwk


def test_reloading_the_directory_gives_the_same_keys(tmp_path: Path) -> None:
    first = KeyRing.load_or_create(tmp_path)
    second = KeyRing.load_or_create(tmp_path)
    assert second.current.kid == first.current.kid
    assert len(_key_files(tmp_path)) == 1


def test_eddsa_keys(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path, algorithm="EdDSA")
    (jwk,) = ring.jwks()["keys"]
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "EdDSA")
    assert "d" not in jwk


def test_changing_the_algorithm_adds_a_key_and_keeps_the_old_one_published(tmp_path: Path) -> None:
    old = KeyRing.load_or_create(tmp_path, algorithm="ES256").current
    ring = KeyRing.load_or_create(tmp_path, algorithm="EdDSA")
    assert ring.current.algorithm == "EdDSA"
    assert {k["kid"] for k in ring.jwks()["keys"]} == {old.kid, ring.current.kid}


def test_unsupported_algorithm_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported signing algorithm"):
        KeyRing.load_or_create(tmp_path, algorithm="HS256")


def test_rotation_publishes_the_new_key_before_it_signs(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path, publish_ahead=60)
    old = ring.current
    t = old.created + 1000
    new = ring.rotate(now=t)
    assert {k["kid"] for k in ring.jwks()["keys"]} == {old.kid, new.kid}
    assert ring.signing_key(t + 59).kid == old.kid
    assert ring.signing_key(t + 60).kid == new.kid
    urgent = ring.rotate(now=t + 100, publish_ahead=0)
    assert ring.signing_key(t + 100).kid == urgent.kid


def test_rotation_keeps_old_key_published_until_its_tokens_expired(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path, max_token_lifetime=600, publish_ahead=0)
    old = ring.current
    t = old.created + 1000
    new = ring.rotate(now=t)
    assert ring.signing_key(t).kid == new.kid != old.kid
    assert {k["kid"] for k in ring.jwks()["keys"]} == {old.kid, new.kid}
    assert ring.retired_at(ring.get(old.kid)) == pytest.approx(t, abs=0.002)

    assert ring.prune(now=t + 599) == []
    assert old.kid in ring
    assert ring.prune(now=t + 601) == [old.kid]
    assert old.kid not in ring
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new.kid]
    assert len(_key_files(tmp_path)) == 1
    assert ring.prune(now=t + 10_000) == []  # the newest key is never pruned


def test_ephemeral_ring_rotates_and_prunes_in_memory() -> None:
    ring = KeyRing.ephemeral(max_token_lifetime=60)
    old = ring.current
    new = ring.rotate(now=old.created + 10)
    assert len(ring.jwks()["keys"]) == 2
    assert ring.prune(now=old.created + 70 + 60) == []  # the new key took over at +70
    assert ring.prune(now=old.created + 70 + 61) == [old.kid]
    assert ring.signing_key(old.created + 1000).kid == new.kid


def test_refresh_is_a_no_op_when_nothing_changed(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    assert ring.refresh() is False


def test_second_instance_sees_rotation_and_pruning_after_refresh(tmp_path: Path) -> None:
    a = KeyRing.load_or_create(tmp_path, max_token_lifetime=100, publish_ahead=0)
    b = KeyRing.load_or_create(tmp_path, max_token_lifetime=100, publish_ahead=0)
    old = a.current
    new = a.rotate(now=old.created + 5)
    assert b.signing_key(old.created + 6).kid == old.kid
    assert b.refresh() is True
    assert b.signing_key(old.created + 6).kid == new.kid
    assert old.kid in b
    a.prune(now=old.created + 200)
    assert b.refresh() is True
    assert old.kid not in b


def test_processes_sharing_the_directory_agree(tmp_path: Path) -> None:
    """Real processes: two create concurrently (one key results), a third rotates, this one refreshes."""
    script = "from gateway.auth.keys import KeyRing; import sys; r = KeyRing.load_or_create(sys.argv[1]); print(r.current.kid)"
    procs = [subprocess.Popen([PYTHON, "-c", script, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    kids = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(kids) == 1 and len(_key_files(tmp_path)) == 1
    ring = KeyRing.load_or_create(tmp_path)
    rotate = textwrap.dedent("""
        import sys
        from gateway.auth.keys import KeyRing
        print(KeyRing.load_or_create(sys.argv[1]).rotate(publish_ahead=0).kid)
    """)
    out = subprocess.run([PYTHON, "-c", rotate, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True)
    rotated_kid = out.stdout.strip()
    assert ring.refresh() is True
    assert ring.current.kid == rotated_kid
    assert kids <= {k["kid"] for k in ring.jwks()["keys"]}


def test_corrupt_key_file_names_the_file(tmp_path: Path) -> None:
    KeyRing.load_or_create(tmp_path)
    bad = tmp_path / "9999999999999-AAAAAAAAAAAAAAAAAAAAAA.pem"
    bad.write_text("not a key")
    with pytest.raises(KeyRingError) as info:
        KeyRing.load_or_create(tmp_path)
    assert str(bad) in str(info.value)


def test_renamed_key_file_is_refused(tmp_path: Path) -> None:
    KeyRing.load_or_create(tmp_path)
    (original,) = _key_files(tmp_path)
    original.rename(tmp_path / "1000000000000-BBBBBBBBBBBBBBBBBBBBBB.pem")
    with pytest.raises(KeyRingError, match="thumbprint"):
        KeyRing.load_or_create(tmp_path)


def test_shared_secret_is_the_same_for_every_instance_and_distinct_per_purpose(tmp_path: Path) -> None:
    a = KeyRing.load_or_create(tmp_path)
    b = KeyRing.load_or_create(tmp_path)
    assert a.shared_secret("csrf") == b.shared_secret("csrf")
    assert a.shared_secret("csrf") != a.shared_secret("login-state")
    assert len(a.shared_secret("csrf")) == 32
    assert _mode(tmp_path / "shared.secret") == 0o600
    assert KeyRing.ephemeral().shared_secret("csrf") != a.shared_secret("csrf")


def test_not_a_directory(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(KeyRingError):
        KeyRing.load_or_create(file)
    assert os.path.isfile(file)


def test_scheduled_rotation_happens_once_across_instances(tmp_path: Path) -> None:
    a = KeyRing.load_or_create(tmp_path, publish_ahead=60)
    b = KeyRing.load_or_create(tmp_path, publish_ahead=60)
    t = a.current.created
    assert a.rotate_if_older(86_400, now=t + 100) is None
    new = a.rotate_if_older(86_400, now=t + 86_401)
    assert new is not None and new.created == pytest.approx(t + 86_461, abs=0.002)
    assert b.rotate_if_older(86_400, now=t + 86_402) is None  # b sees a's key under the lock
    assert len(_key_files(tmp_path)) == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_with_keys_loads_and_without_keys_explains(tmp_path: Path) -> None:
    kid = KeyRing.load_or_create(tmp_path / "ro").current.kid
    (tmp_path / "ro" / ".lock").unlink()
    (tmp_path / "ro").chmod(0o500)
    (tmp_path / "empty").mkdir(mode=0o500)
    try:
        assert KeyRing.load_or_create(tmp_path / "ro").current.kid == kid
        with pytest.raises(KeyRingError, match="cannot write"):
            KeyRing.load_or_create(tmp_path / "empty")
    finally:
        (tmp_path / "ro").chmod(0o700)
