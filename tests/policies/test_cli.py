"""`ztgate policy check|test` entry points and the shipped defaults' own tests."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import policies
from policies import cli

BROKEN = Path(__file__).with_name("broken")


def test_shipped_defaults_load_and_pass_their_tests():
    report = policies.run_tests(policies.DEFAULTS_DIR)
    assert report.ok, report.to_text()
    assert report.passed >= 20 and report.failed == 0
    assert policies.check_directory(policies.DEFAULTS_DIR) == []


def test_check_main_ok_and_errors(tmp_path, capsys):
    assert cli.check_main([str(policies.DEFAULTS_DIR)]) == 0
    assert capsys.readouterr().out.startswith("ok: 4 policies")
    shutil.copy(BROKEN / "unknown_signal.yaml", tmp_path)
    assert cli.check_main([str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{tmp_path}/unknown_signal.yaml:7:29: in 'when': unknown signal 'keyboard'"
    assert out[1].strip().startswith("hint: known signals:")
    assert cli.check_main([str(tmp_path), "--json"]) == 1
    assert '"ok": false' in capsys.readouterr().out


def test_test_main_reports_pass_and_fail(tmp_path, capsys):
    shutil.copytree(policies.DEFAULTS_DIR, tmp_path / "p")
    assert cli.test_main([str(tmp_path / "p")]) == 0
    summary = re.search(r"PASS: (\d+)/(\d+)", capsys.readouterr().out)
    assert summary and summary.group(1) == summary.group(2) and int(summary.group(1)) >= 20
    (tmp_path / "p" / "tests" / "wrong_test.yaml").write_text(
        "tests:\n  - name: wrong on purpose\n    given: {risk: 0.1}\n    then: {action: terminate}\n")
    assert cli.test_main([str(tmp_path / "p")]) == 1
    out = capsys.readouterr().out
    assert "FAIL: " in out and "wrong on purpose" in out and "want action terminate, got allow" in out


def test_bad_test_file_is_a_diagnostic(tmp_path):
    shutil.copy(policies.DEFAULTS_DIR / "session.yaml", tmp_path)
    (tmp_path / "x_test.yaml").write_text("tests:\n  - name: x\n    given: {sessions: {}}\n    then: {action: allow}\n")
    report = policies.run_tests(tmp_path)
    assert not report.ok
    [d] = report.diagnostics
    assert (Path(d.file).name, d.line) == ("x_test.yaml", 2) and "'given' may only hold" in d.message


@pytest.mark.parametrize("case, problem", [
    # params as a list crashed the runner; a second action silently replaced the first
    ("    then: {action: terminate, params: [lock_user_for]}\n", "'then.params' must be a mapping"),
    ("    then:\n      action: allow\n      action: terminate\n", "duplicate key 'action'"),
])
def test_a_malformed_case_is_a_diagnostic_not_a_crash(tmp_path, case, problem):
    shutil.copy(policies.DEFAULTS_DIR / "session.yaml", tmp_path)
    (tmp_path / "x_test.yaml").write_text("tests:\n  - name: x\n" + case)
    report = policies.run_tests(tmp_path)
    assert [d.message for d in report.diagnostics if problem in d.message], report.to_text()


def test_policy_errors_fail_the_test_run(tmp_path, capsys):
    shutil.copy(BROKEN / "cel_type.yaml", tmp_path)
    assert cli.test_main([str(tmp_path)]) == 1
    assert "cel_type.yaml:5:35" in capsys.readouterr().out


def test_readme_example_loads(tmp_path):
    readme = (Path(policies.__file__).with_name("README.md")).read_text()
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "example.yaml").write_text(example)
    policy_set = policies.load_directory(tmp_path)
    assert len(policy_set.rules) == 4 and policy_set.uses_request("finance")
    assert policy_set.expectations({"session": {"route": "finance", "route_kind": "http"},
                                    "user": {"groups": ["finance"]}}).site == ""  # hosts/paths need a request
