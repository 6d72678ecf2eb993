"""The takeover scenarios' CI set against the whole product (issue 8): `ztgate scenario --all --ci --json` as a real
process starts `ztgate run` (shipped default policies, Redis with its own key prefix) and `ztgate demo-upstream`,
enrols four Aalto participants (three from imported offline profiles, one by typing in the browser), and drives
real Chromium: genuine, impostor, relayed operator (110 ms added round trip), fixed-interval script, and a replayed
session cookie.

Detection rates are measured, not asserted here (they are statistical; the full set and its Wilson intervals are in
docs/scenarios.md). What is asserted is that every path runs end to end: no run errors, the browser enrolment
produced a profile, and the replayed cookie (a deterministic rule) is stepped up.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "datasets" / "aalto-desktop" / "keystrokes"

pytestmark = [pytest.mark.slow, pytest.mark.browser]

if not Path("/usr/bin/chromium").exists():
    pytest.skip("needs /usr/bin/chromium", allow_module_level=True)
if not DATA.is_dir():
    pytest.skip("needs the Aalto dataset in ../shared/datasets/aalto-desktop", allow_module_level=True)


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


def test_ci_scenario_set_runs_end_to_end():
    store = "redis" if _redis_up() else "memory"
    done = subprocess.run([sys.executable, "-m", "gateway.cli.main", "scenario", "--all", "--ci", "--json",
                           "--store", store], cwd=ROOT, capture_output=True, text=True, timeout=480)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    print(json.dumps([{"scenario": s["scenario"], "decisions": s["summary"]["decisions"],
                       "rate": s["summary"]["rate"], "median_keys": s["summary"]["median_keystrokes_to_decision"]}
                      for s in report["scenarios"]], indent=1))
    runs = [r for s in report["scenarios"] for r in s["runs"]]
    assert {s["name"] for s in report["scenarios"]} == {"genuine", "impostor", "relay", "script", "hijack"}
    assert [r for r in runs if r["decision"] == "error"] == []
    assert all(r["keystrokes"] > 0 for r in runs if not r["scenario"].startswith("hijack"))
    assert any("profile" in note for note in report["notes"]), report["notes"]  # every user was enrolled
    hijack = next(s for s in report["scenarios"] if s["name"] == "hijack")
    assert all(r["decision"] in ("step_up", "refused", "terminate") for r in hijack["runs"])
