"""Every broken policy file in tests/policies/broken/ gives one precise diagnostic, and nothing loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import policies

BROKEN = Path(__file__).with_name("broken")

# file, line, column, message fragment, hint fragment
CASES = [
    ("bad_yaml.yaml", 6, 8, "invalid YAML", "indentation"),
    ("unknown_field.yaml", 5, 9, "unknown field 'wen' in a rule", "did you mean 'when'?"),
    ("wrong_type.yaml", 3, 13, "shadow must be true or false, got a string", ""),
    ("cel_syntax.yaml", 5, 45, "in 'when': Syntax error", ""),
    ("cel_type.yaml", 5, 35, "no matching overload for '_>_' applied to '(double, string)'", ""),
    ("int_double.yaml", 5, 20, "no matching overload for '_>=_' applied to '(double, int)'", "write 100.0"),
    ("unknown_signal.yaml", 7, 29, "unknown signal 'keyboard'", "known signals: cadence, relay"),
    ("unknown_signal_field.yaml", 7, 27, "unknown field 'signals.relay.scor'", "did you mean signals.relay.score?"),
    ("request_method.yaml", 5, 50, "unknown field 'request.size'", ""),
    ("duplicate_rule_id.yaml", 7, 13, "duplicate rule id 'r' in policy 'p'", "first defined at line 4"),
    ("contradictory.yaml", 4, 9, "contradictory rules: 'trusted-admins' allows and 'no-admins' (line 7) does terminate",
     "always wins"),
    ("dead_rule.yaml", 7, 9, "rule 'ask' (step_up) can never decide: rule 'kill' (line 4)", ""),
    ("bad_duration.yaml", 8, 26, "lock_user_for: invalid duration '15 minutes'", '"15m"'),
    ("unknown_param.yaml", 9, 11, "unknown parameter 'timeout' for action step_up", "method, max_age, grace, acr_values"),
    ("unknown_action.yaml", 6, 17, "unknown action 'block'", ""),
    ("bad_method.yaml", 7, 26, "unknown step-up method 'sms'", "totp | webauthn | oidc"),
    ("not_bool.yaml", 5, 15, "condition must be a bool, this one is double", ""),
    ("bad_timezone.yaml", 5, 55, "unknown timezone 'Europe/Pariss'", "IANA"),
    ("bad_route_kind.yaml", 4, 27, "unknown route kind 'rdp'", "guacamole"),
    ("duplicate_key.yaml", 7, 9, "duplicate key 'action' in a rule", "line 6"),
    ("missing_when.yaml", 4, 9, "rule 'r' has no 'when'", ""),
    ("restrict_empty.yaml", 6, 17, "restrict without any restriction", "read_only"),
    # values that loaded and then never did what they said (found by an audit)
    ("day_typo.yaml", 3, 34, "unknown day 'monkey'", "mon-fri"),  # read as Monday
    ("days_empty.yaml", 3, 28, "expect.hours.days is empty", "leave days out"),
    ("hours_empty.yaml", 3, 43, "start and end are the same time", "leave expect.hours out"),
    ("rtt_nan.yaml", 3, 29, "must be a finite number", ""),
    ("restrict_noop.yaml", 7, 17, "restrict without any restriction", "read_only"),  # marked restricted for nothing
    ("duration_huge.yaml", 8, 26, "lock_user_for: at most 366 days", '"15m"'),  # Redis refused the expiry
]


def test_every_broken_file_has_a_case():
    covered = {case[0] for case in CASES}
    assert covered == {p.name for p in BROKEN.glob("*.yaml")}


@pytest.mark.parametrize("name,line,column,message,hint", CASES, ids=[c[0] for c in CASES])
def test_broken_file_diagnostic(tmp_path, name, line, column, message, hint):
    shutil.copy(BROKEN / name, tmp_path / name)
    diagnostics = [d for d in policies.check_directory(tmp_path) if d.severity == "error"]
    assert diagnostics, f"{name} loaded without error"
    found = [d for d in diagnostics if message in d.message]
    assert found, [str(d) for d in diagnostics]
    d = found[0]
    assert (Path(d.file).name, d.line, d.column) == (name, line, column), str(d)
    assert hint in d.hint
    assert str(d).startswith(f"{tmp_path / name}:{line}:{column}: ")
    with pytest.raises(policies.PolicyLoadError) as raised:
        policies.load_directory(tmp_path)
    assert d in raised.value.diagnostics


def test_duplicate_policy_id_across_files():
    with pytest.raises(policies.PolicyLoadError) as raised:
        policies.load_directory(BROKEN / "dup_across")
    [d] = raised.value.diagnostics
    assert (Path(d.file).name, d.line, d.column) == ("b.yaml", 8, 5)
    assert d.message == "duplicate policy id 'shared'"
    assert "a.yaml:2" in d.hint


def test_one_bad_file_stops_the_whole_directory(tmp_path):
    shutil.copy(policies.DEFAULTS_DIR / "relay.yaml", tmp_path / "relay.yaml")
    assert len(policies.load_directory(tmp_path).rules) == 2
    shutil.copy(BROKEN / "cel_type.yaml", tmp_path / "zz.yaml")
    with pytest.raises(policies.PolicyLoadError) as raised:
        policies.load_directory(tmp_path)
    assert [Path(d.file).name for d in raised.value.diagnostics] == ["zz.yaml"]


def test_missing_and_empty_directories(tmp_path):
    assert "no policy files" in policies.check_directory(tmp_path)[0].message
    assert "not a directory" in policies.check_directory(tmp_path / "nope")[0].message


def test_constant_false_is_a_warning_and_still_loads(tmp_path):
    (tmp_path / "p.yaml").write_text("policies:\n  - id: p\n    rules:\n      - id: never\n        when: false\n"
                                     "        action: terminate\n")
    [warning] = policies.check_directory(tmp_path)
    assert warning.severity == "warning" and (warning.line, warning.column) == (5, 15)
    assert "can never fire" in warning.message
    assert policies.load_directory(tmp_path).warnings == (warning,)


def test_diagnostic_str_format():
    d = policies.Diagnostic("a.yaml", 3, 7, "bad thing", "do this")
    assert str(d) == "a.yaml:3:7: bad thing (hint: do this)"
    assert str(policies.Diagnostic("a.yaml", 1, 1, "x")) == "a.yaml:1:1: x"
