"""Scenario report: Wilson intervals, goals, markdown and JSON (pure), and the runner's offline parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.scenarios import runner, script
from bench.scenarios.plan import timeline
from bench.scenarios.report import (
    Scenario,
    ScenarioResult,
    goal_for,
    render_markdown,
    results_json,
    summarize,
    wilson_interval,
    write_report,
)


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(95, 100)
    assert low == pytest.approx(0.88825, abs=1e-4) and high == pytest.approx(0.97846, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and round(wilson_interval(0, 10)[1], 4) == 0.2775
    assert round(wilson_interval(10, 10)[0], 4) == 0.7225 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_scenario_validation_and_labels() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        Scenario("teleport", 1)
    with pytest.raises(ValueError, match="repetitions"):
        Scenario("genuine", 0)
    assert Scenario("relay", 1, {"added_rtt_ms": 110, "jitter_ms": 5}).label == "relay added_rtt_ms=110 jitter_ms=5"


def _result(label: str, rep: int, decision: str, seconds: float | None, keys: int | None, fa: int = 0) -> ScenarioResult:
    return ScenarioResult(label, rep, decision, seconds, keys, false_alarms=fa, keystrokes=120, seconds=30.0,
                          note="user 1002 | typist 5149")  # type: ignore[arg-type]


def test_goals_follow_the_issue() -> None:
    relay110 = Scenario("relay", 5, {"added_rtt_ms": 110})
    relay60 = Scenario("relay", 5, {"added_rtt_ms": 60})
    assert goal_for(Scenario("relay", 5, {"added_rtt_ms": 30})) is None
    assert goal_for(relay110).success(_result("r", 0, "terminate", 59.0, 300))
    assert not goal_for(relay110).success(_result("r", 0, "step_up", 10.0, 30))
    assert goal_for(relay60).success(_result("r", 0, "step_up", 100.0, 500))
    impostor = goal_for(Scenario("impostor", 1))
    assert impostor.success(_result("i", 0, "terminate", 5.0, 80))
    assert not impostor.success(_result("i", 0, "step_up", 5.0, 101))
    assert goal_for(Scenario("script", 1)).success(_result("s", 0, "step_up", 2.0, 50))
    assert goal_for(Scenario("hijack", 1)).success(_result("h", 0, "refused", None, None))
    assert not goal_for(Scenario("genuine", 1)).success(_result("g", 0, "step_up", 3.0, 40, fa=1))


def test_summary_and_markdown_and_json(tmp_path: Path) -> None:
    impostor = Scenario("impostor", 4)
    genuine = Scenario("genuine", 3)
    runs = [
        (impostor, [_result("impostor", i, "step_up", 4.0 + i, 40 + i) for i in range(3)]
         + [_result("impostor", 3, "allow", None, None)]),
        (genuine, [_result("genuine", i, "allow", None, None) for i in range(2)]
         + [_result("genuine", 2, "step_up", 12.0, 90, fa=1)]),
    ]
    summary = summarize(*runs[0])
    assert (summary.runs, summary.successes, summary.rate) == (4, 3, 0.75)
    assert summary.ci95 == wilson_interval(3, 4) and summary.goal_met is False
    assert summary.median_keystrokes_to_decision == 41 and summary.decisions == {"step_up": 3, "allow": 1}
    assert summarize(*runs[1]).false_alarms == 1

    markdown = render_markdown(runs, context="test run")
    lines = markdown.splitlines()
    assert lines[0] == "# Takeover scenarios" and "test run" in markdown
    header = next(line for line in lines if line.startswith("| scenario |"))
    row = next(line for line in lines if line.startswith("| impostor | 4 |"))
    assert header.count("|") == row.count("|")  # well-formed table
    assert "75.0%" in row and "## genuine" in markdown and "user 1002 \\| typist 5149" in markdown

    data = results_json(runs)
    assert json.loads(json.dumps(data))["scenarios"][0]["summary"]["successes"] == 3

    out = tmp_path / "docs" / "scenarios.md"
    write_report(out, markdown)
    assert out.read_text() == markdown and not out.with_suffix(".md.tmp").exists()


def test_runner_offline_parts() -> None:
    assert runner.action_of({"state": "terminated"}) == "terminate"
    assert runner.action_of({"state": "step_up_required"}) == "step_up"
    assert runner.action_of({}) == "allow"
    assert {s.name for s in runner.FULL_SET} == {"genuine", "impostor", "relay", "script", "hijack"}
    genuine = [s for s in runner.FULL_SET if s.name == "genuine"]
    assert sum(s.repetitions * s.parameters["sentences"] for s in genuine) >= 200  # sentence-sessions
    with pytest.raises(SystemExit):
        runner.main([])  # neither NAME nor --all
    with pytest.raises(SystemExit):
        runner.main(["genuine", "--participants", "1"])
    median, sd = runner.reaction_model("1234")
    assert runner.reaction_model("1234") == (median, sd) and 200 < median < 1000 and sd > 0


def test_result_counts_keys_until_the_decision() -> None:
    class Watch:
        strongest, decided_at, rule = "step_up", 100.5, "impostor-typing"

        def signal_note(self) -> str:
            return ""

    downs = [100.0 + i / 10 for i in range(10)]
    result = runner.result_of(Scenario("impostor", 1), 0, Watch(), downs, note="user 1")  # type: ignore[arg-type]
    assert result.keystrokes_to_decision == 6 and result.keystrokes == 10
    assert result.seconds_to_decision == pytest.approx(0.5) and "impostor-typing" in result.note


def test_results_replace_their_section_only() -> None:
    from bench.scenarios.report import RESULTS_BEGIN, RESULTS_END, replace_results

    doc = replace_results("# Takeover scenarios\n\nhand-written\n", "table 1")
    assert doc.startswith("# Takeover scenarios\n\nhand-written") and "table 1" in doc
    doc = replace_results(doc + "\ntrailer\n", "table 2")
    assert "table 1" not in doc and "table 2" in doc and doc.rstrip().endswith("trailer")
    assert doc.count(RESULTS_BEGIN) == 1 and doc.count(RESULTS_END) == 1


def test_script_plans() -> None:
    plan = script.fixed_interval_plan("Hi, you!", interval_ms=50, dwell_ms=20)
    assert plan.expected_text == "Hi, you!"
    downs = [e.t_ms for e in timeline(plan) if e.type != "keyUp" and e.key.code not in ("ShiftLeft",)]
    assert [round(b - a, 6) for a, b in zip(downs, downs[1:])] == [50.0] * 7
    with pytest.raises(ValueError, match="interval_ms"):
        script.fixed_interval_plan("a", interval_ms=0)
    with pytest.raises(ValueError, match="overlap"):
        script.fixed_interval_plan("a", interval_ms=25, dwell_ms=20)


def test_the_set_starts_long_runs_first_and_browser_enrolled_users_after_two_waves():
    from bench.scenarios.runner import FULL_SET, expected_seconds, schedule_jobs

    participants = [str(i) for i in range(24)]
    jobs = schedule_jobs(FULL_SET, participants, {"0", "1", "2"}, concurrency=5)
    assert len(jobs) == sum(s.repetitions for s in FULL_SET)
    assert len({(i, rep) for i, _, rep in jobs}) == len(jobs)
    first = jobs[:10]
    assert all(participants[rep % 24] not in {"0", "1", "2"} for _, _, rep in first)
    assert expected_seconds(first[0][1]) == max(expected_seconds(s) for s in FULL_SET)
    assert expected_seconds(jobs[-1][1]) == min(expected_seconds(s) for s in FULL_SET)


def test_genuine_rows_add_up_to_the_sentence_sessions_goal() -> None:
    form, terminal = Scenario("genuine", 2, {"sentences": 10}), Scenario("genuine", 1, {"surface": "terminal"})

    def run(label: str, rep: int, sentences: int, fa: int = 0) -> ScenarioResult:
        return ScenarioResult(label, rep, "step_up" if fa else "allow", None, None, false_alarms=fa,  # type: ignore[arg-type]
                              sentences=sentences)

    clean = render_markdown([(form, [run("g", 0, 100), run("g", 1, 90)]), (terminal, [run("t", 0, 10)])])
    assert "Genuine, all 2 rows together: 0 false alarms in 200 sentence-sessions (goal: none in >= 200): met." in clean
    alarmed = render_markdown([(form, [run("g", 0, 100), run("g", 1, 90, fa=1)]), (terminal, [run("t", 0, 10)])])
    assert "1 false alarms in 200 sentence-sessions (goal: none in >= 200): not met." in alarmed
    assert "rows together" not in render_markdown([(form, [run("g", 0, 200)])])


def test_plans_for_the_terminal_leave_out_what_its_line_editor_ignores() -> None:
    from bench.scenarios.keymap import spec_for_char
    from bench.scenarios.plan import PlannedStroke, TypingPlan, for_surface

    def plan(text: str, extra: tuple[str, ...] = ()) -> TypingPlan:
        from bench.scenarios.keymap import KeySpec

        strokes = [PlannedStroke(100.0 * i, 100.0 * i + 50, spec_for_char(ch)[0]) for i, ch in enumerate(text)]
        for j, code in enumerate(extra):  # caret moves in the middle of the line
            strokes.insert(2, PlannedStroke(100.0 * len(text) + j, 100.0 * len(text) + j + 10,
                                            KeySpec(code, 37, code)))
        return TypingPlan(tuple(sorted(strokes, key=lambda s: s.down_ms)), "test")

    line = for_surface(plan("ls -la", ("ArrowLeft", "Home")), "terminal")
    assert line is not None and line.expected_text == "ls -la"
    assert [s.key.code for s in line.strokes if s.key.code in ("ArrowLeft", "Home")] == []
    assert for_surface(plan("exit now"), "terminal") is None  # would end the demo shell
    assert for_surface(plan("exit now"), "form").expected_text == "exit now"
    with pytest.raises(ValueError, match="surface"):
        for_surface(plan("a"), "desktop")


def test_the_operator_waits_for_an_empty_field_or_for_the_prompt() -> None:
    from bench.scenarios.operator import CURSOR, Surface
    from bench.scenarios.protocol import Observation

    form, terminal = Surface("#f"), Surface("#screen", "p7@intranet:~$ ")
    expect, ready = form.ready()
    assert expect == "" and ready(Observation(True, True, True, 0, True))
    assert not ready(Observation(True, True, True, 3, True))
    expect, ready = terminal.ready()
    assert expect == "p7@intranet:~$ " + CURSOR and ready(Observation(True, True, True, 900, True))
    assert not ready(Observation(True, True, True, 900, False))
    expect, shows = terminal.showing("ls")
    assert expect == "p7@intranet:~$ ls" + CURSOR and shows(Observation(True, True, True, 902, True))
    expect, shows = form.showing("ls")
    assert expect == "ls" and shows(Observation(True, True, True, 2, True)) and not shows(Observation(True, True, True, 5, True))


def test_nobody_signs_in_more_often_than_the_gateway_allows_totp_attempts():
    # a gateway allows 10 TOTP attempts per user in 15 minutes (gateway.auth.totp; until this was fixed, accepted codes
    # counted too): the whole full set, with the browser enrolments, stays under that for every user even if all
    # their runs fell in one window
    from collections import Counter

    from bench.scenarios.runner import FULL_BROWSER_ENROL, FULL_POOL, FULL_SET, first_participant

    sign_ins = Counter({u: 1 for u in range(FULL_BROWSER_ENROL)})
    for scenario in FULL_SET:
        start = first_participant(scenario, FULL_BROWSER_ENROL, FULL_POOL)
        sign_ins.update((start + rep) % FULL_POOL for rep in range(scenario.repetitions))
    assert max(sign_ins.values()) <= 9
