"""`ztgate users add|list|remove` (gateway.auth.users_cli.main)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyotp

from gateway.auth.directory import Directory
from gateway.auth.users_cli import main


def run(argv: list[str], path: Path, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, path, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_add_list_remove(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    code, out, err = run(["add", "alice", "--email", "alice@example.test", "--group", "staff", "--group", "ops",
                          "--site", "berlin", "--country", "de", "--password-stdin"], path, "s3cret-password\n")
    assert code == 0, err
    secret = next(line.strip() for line in out.splitlines() if line.startswith("  ") and "otpauth" not in line)
    uri = next(line.strip() for line in out.splitlines() if "otpauth://" in line)
    assert pyotp.parse_uri(uri).secret == secret
    assert "s3cret-password" not in out + err + path.read_text()
    user = Directory.load(path).authenticate("alice", "s3cret-password")
    assert user is not None and user.country == "DE" and user.groups == ("staff", "ops") and user.totp_secret == secret

    code, out, _ = run(["list"], path)
    assert code == 0 and out.startswith("alice\talice@example.test\tstaff,ops\tberlin\tDE")
    assert secret not in out
    code, out, _ = run(["list", "--json"], path)
    assert json.loads(out)[0]["username"] == "alice" and secret not in out

    code, out, _ = run(["remove", "alice"], path)
    assert code == 0 and "removed alice" in out
    assert run(["list", "--json"], path)[1].strip() == "[]"


def test_errors_exit_1_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    code, _, err = run(["add", "bob", "--email", "bob@example.test", "--password-stdin"], path, "short\n")
    assert code == 1 and "shorter than" in err and str(path) in err
    assert not path.exists()
    code, _, err = run(["remove", "bob"], path)
    assert code == 1 and "does not exist" in err


def test_usage_errors_exit_2(tmp_path: Path, capsys) -> None:
    assert run(["frobnicate"], tmp_path / "u.yaml")[0] == 2
    assert run(["add", "carol"], tmp_path / "u.yaml")[0] == 2  # --email missing
