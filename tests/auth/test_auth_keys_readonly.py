"""A key directory the gateway cannot write (a Kubernetes Secret, mounted read-only): made complete by
`ztgate keys init`, it loads; the gateway's scheduled rotation and pruning leave it alone instead of failing every
30 s; a directory without shared.secret is refused with a hint instead of an OSError traceback. The read-only mount
is real: a bind mount remounted read-only in a private mount namespace (`unshare -m`; root ignores permission bits)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.auth.keys_cli import main as keys_main

PROBE = textwrap.dedent("""
    import json, sys
    from gateway.auth.keys import KeyRing, KeyRingError
    out = {}
    try:
        ring = KeyRing.load_or_create(sys.argv[1], max_token_lifetime=0.0)
        out["read_only"] = ring.read_only
        out["rotated"] = ring.rotate_if_older(0.0, now=ring.keys[0].created + 10.0) is not None
        out["pruned"] = ring.prune(now=ring.keys[0].created + 1e9)
        out["secret"] = len(ring.shared_secret("csrf"))
    except KeyRingError as exc:
        out["error"] = str(exc)
    print(json.dumps(out))
""")


def _read_only_run(directory: Path) -> dict:
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    mount = directory.parent / "mounted"
    mount.mkdir()
    script = (f"mount --bind {directory} {mount} && mount -o remount,bind,ro {mount} && "
              f"{sys.executable} -c '{PROBE}' {mount}")
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[2])
    if "mount:" in r.stderr or "unshare:" in r.stderr:
        pytest.skip(f"no private read-only mount here: {r.stderr.strip()[:200]}")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_an_initialised_directory_works_read_only(tmp_path):
    keys = tmp_path / "keys"
    assert keys_main(["init", str(keys)]) == 0
    assert (keys / "shared.secret").exists() and len(list(keys.glob("*.pem"))) == 1
    seen = _read_only_run(keys)
    assert seen == {"read_only": True, "rotated": False, "pruned": [], "secret": 32}


def test_a_directory_without_its_shared_secret_is_refused_with_a_hint(tmp_path):
    keys = tmp_path / "keys"
    assert keys_main(["init", str(keys)]) == 0
    (keys / "shared.secret").unlink()
    seen = _read_only_run(keys)
    assert "ztgate keys init" in seen["error"]


def test_rotate_and_prune_a_managed_copy(tmp_path, capsys):
    keys = tmp_path / "keys"
    assert keys_main(["init", str(keys)]) == 0
    assert keys_main(["rotate", str(keys), "--publish-ahead", "0"]) == 0
    capsys.readouterr()
    assert keys_main(["list", str(keys), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["keys"]
    assert [r["state"] for r in rows][0] == "signing" and rows[1]["state"].startswith("retired")
    assert keys_main(["prune", str(keys), "--retention", "0"]) == 0
    assert len(list(keys.glob("*.pem"))) == 1
    assert keys_main(["list", str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize("mode, gid_is_ours, warned", [(0o600, True, False), (0o440, True, False),
                                                       (0o440, False, True), (0o604, True, True)])
def test_key_file_mode_warning(tmp_path, caplog, mode, gid_is_ours, warned):
    """Group access is expected on Kubernetes (fsGroup: the pod's own group); others, or a foreign group, are not."""
    import logging
    import os

    from gateway.auth.keys import KeyRing

    keys = tmp_path / "keys"
    assert keys_main(["init", str(keys)]) == 0
    (pem,) = keys.glob("*.pem")
    os.chmod(pem, mode)
    if not gid_is_ours:
        try:
            os.chown(pem, -1, os.getegid() + 1)
        except PermissionError:
            pytest.skip("only root can give a file another group")
    with caplog.at_level(logging.WARNING, logger="gateway.auth.keys"):
        KeyRing.load_or_create(keys)
    assert ("readable by group or others" in caplog.text) == warned
