"""Scenario results, goals, Wilson intervals and the docs/scenarios.md writer (pure; no I/O but `write_report`)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

SCENARIO_NAMES = ("genuine", "impostor", "relay", "script", "hijack")
Action = Literal["allow", "step_up", "restrict", "terminate", "refused", "error"]
# how strongly the gateway acted: a run's decision is the strongest action seen during it
SEVERITY: dict[str, int] = {"error": -1, "allow": 0, "restrict": 1, "step_up": 2, "refused": 3, "terminate": 3}


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str  # one of SCENARIO_NAMES
    repetitions: int
    parameters: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"added_rtt_ms": 110, "jitter_ms": 5}

    def __post_init__(self) -> None:
        if self.name not in SCENARIO_NAMES:
            raise ValueError(f"unknown scenario {self.name!r}; known: {', '.join(SCENARIO_NAMES)}")
        if self.repetitions < 1:
            raise ValueError(f"{self.name}: repetitions must be >= 1, got {self.repetitions}")

    @property
    def label(self) -> str:
        if not self.parameters:
            return self.name
        return self.name + " " + " ".join(f"{k}={v}" for k, v in sorted(self.parameters.items()))


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    scenario: str  # Scenario.label
    repetition: int
    decision: Action  # strongest action during the run
    seconds_to_decision: float | None  # seconds of active input until the first non-allow decision
    keystrokes_to_decision: int | None  # keystrokes dispatched until then
    false_alarms: int = 0  # non-allow decisions in a genuine run (0 or 1 per sentence-session)
    keystrokes: int = 0  # dispatched in the whole run
    seconds: float = 0.0  # active input in the whole run
    note: str = ""  # loggable detail (participant ids, error text); never typed characters
    sentences: int = 0  # sentences completed (genuine: the run's sentence-sessions)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Goal:
    """What the issue promises for one scenario, as a per-run success test and a target rate."""

    text: str
    target_rate: float
    success: Callable[[ScenarioResult], bool]


def _acted(result: ScenarioResult, at_least: str) -> bool:
    return SEVERITY[result.decision] >= SEVERITY[at_least]


def goal_for(scenario: Scenario) -> Goal | None:
    """The issue's goals (issue 8). `None`: reported without a goal (e.g. relay at 30 ms)."""
    rtt = scenario.parameters.get("added_rtt_ms")
    match scenario.name:
        case "genuine":
            return Goal("no step-up or termination (>= 200 sentence-sessions)", 1.0, lambda r: r.decision == "allow")
        case "impostor":
            return Goal(
                "step-up within 100 keystrokes in >= 95%",
                0.95,
                lambda r: _acted(r, "step_up") and (r.keystrokes_to_decision or 10**9) <= 100,
            )
        case "relay" if rtt is not None and rtt >= 110:
            return Goal(
                "terminate within 60 s of active input in >= 95%",
                0.95,
                lambda r: r.decision == "terminate" and (r.seconds_to_decision or math.inf) <= 60,
            )
        case "relay" if rtt is not None and rtt >= 60:
            return Goal(
                "step-up within 120 s",
                0.95,
                lambda r: _acted(r, "step_up") and (r.seconds_to_decision or math.inf) <= 120,
            )
        case "script":
            return Goal(
                "caught (step-up or terminate) within 50 keystrokes",
                0.95,
                lambda r: _acted(r, "step_up") and (r.keystrokes_to_decision or 10**9) <= 50,
            )
        case "hijack":
            return Goal("replayed cookie refused or stepped up", 0.95, lambda r: _acted(r, "step_up"))
    return None


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (default 95%). (0, 1) when n == 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # at the edges the bound is exactly 0 or 1; rounding would otherwise give 0.9999999999999999
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True, slots=True)
class ScenarioSummary:
    scenario: str
    runs: int
    successes: int | None  # None without a goal
    rate: float | None
    ci95: tuple[float, float] | None
    goal: str
    goal_met: bool | None  # point estimate reaches the target
    goal_met_at_95: bool | None  # the interval's lower bound reaches it
    median_seconds_to_decision: float | None
    median_keystrokes_to_decision: float | None
    false_alarms: int
    decisions: dict[str, int]
    sentences: int = 0


def summarize(scenario: Scenario, results: Sequence[ScenarioResult]) -> ScenarioSummary:
    goal = goal_for(scenario)
    decisions: dict[str, int] = {}
    for r in results:
        decisions[r.decision] = decisions.get(r.decision, 0) + 1
    seconds = [r.seconds_to_decision for r in results if r.seconds_to_decision is not None]
    keys = [r.keystrokes_to_decision for r in results if r.keystrokes_to_decision is not None]
    successes = rate = ci = met = met95 = None
    if goal is not None:
        successes = sum(goal.success(r) for r in results)
        rate = successes / len(results) if results else None
        ci = wilson_interval(successes, len(results))
        met = rate is not None and rate >= goal.target_rate
        met95 = ci[0] >= goal.target_rate if goal.target_rate < 1.0 else None  # a 100% goal has no 95% lower bound
    return ScenarioSummary(
        scenario=scenario.label,
        runs=len(results),
        successes=successes,
        rate=rate,
        ci95=ci,
        goal=goal.text if goal else "(reported, no goal)",
        goal_met=met,
        goal_met_at_95=met95,
        median_seconds_to_decision=statistics.median(seconds) if seconds else None,
        median_keystrokes_to_decision=statistics.median(keys) if keys else None,
        false_alarms=sum(r.false_alarms for r in results),
        decisions=decisions,
        sentences=sum(r.sentences for r in results),
    )


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _yes_no(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "no")


def render_markdown(
    runs: Sequence[tuple[Scenario, Sequence[ScenarioResult]]], *, heading: str = "Takeover scenarios", context: str = ""
) -> str:
    """docs/scenarios.md: a summary table (rates with Wilson 95% intervals against the goals), then every run."""
    lines = [f"# {heading}", ""]
    if context:
        lines += [context, ""]
    lines += [
        "Rates are the share of runs meeting the scenario's goal, with a Wilson 95% confidence interval. "
        "A run's decision is the strongest action the gateway took during it.",
        "",
        "| scenario | runs | goal | met | rate | 95% CI | goal met (point / 95% lower bound) "
        "| median s to decision | median keys to decision | false alarms | decisions |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario, results in runs:
        s = summarize(scenario, results)
        ci = "n/a" if s.ci95 is None else f"{_pct(s.ci95[0])} - {_pct(s.ci95[1])}"
        decisions = ", ".join(f"{k} {v}" for k, v in sorted(s.decisions.items()))
        lines.append(
            f"| {s.scenario} | {s.runs} | {s.goal} | {'n/a' if s.successes is None else s.successes} | "
            f"{_pct(s.rate)} | {ci} | {_yes_no(s.goal_met)} / {_yes_no(s.goal_met_at_95)} | "
            f"{_fmt(s.median_seconds_to_decision)} | {_fmt(s.median_keystrokes_to_decision, 0)} | "
            f"{s.false_alarms}{f' in {s.sentences} sentences' if s.sentences else ''} | {decisions} |"
        )
    genuine = [summarize(sc, rs) for sc, rs in runs if sc.name == "genuine"]
    if len(genuine) > 1:  # the sentence-sessions goal is over every place people typed
        alarms, sentences = sum(g.false_alarms for g in genuine), sum(g.sentences for g in genuine)
        lines += ["", f"Genuine, all {len(genuine)} rows together: {alarms} false alarms in {sentences} sentence-sessions "
                      f"(goal: none in >= 200): {'met' if alarms == 0 and sentences >= 200 else 'not met'}."]
    for scenario, results in runs:
        lines += [
            "",
            f"## {scenario.label}",
            "",
            "| repetition | decision | s to decision | keys to decision | false alarms | keys | s | note |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in results:
            note = r.note.replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| {r.repetition} | {r.decision} | {_fmt(r.seconds_to_decision)} | "
                f"{'n/a' if r.keystrokes_to_decision is None else r.keystrokes_to_decision} | {r.false_alarms} | "
                f"{r.keystrokes} | {_fmt(r.seconds)} | {note} |"
            )
    return "\n".join(lines) + "\n"


def results_json(runs: Sequence[tuple[Scenario, Sequence[ScenarioResult]]]) -> dict[str, Any]:
    return {
        "scenarios": [
            {
                "scenario": scenario.label,
                "name": scenario.name,
                "parameters": dict(scenario.parameters),
                "summary": asdict(summarize(scenario, results)),
                "runs": [r.to_dict() for r in results],
            }
            for scenario, results in runs
        ]
    }


RESULTS_BEGIN = "<!-- scenario results: generated by `ztgate scenario --all`; do not edit by hand -->"
RESULTS_END = "<!-- end of scenario results -->"


def replace_results(document: str, markdown: str) -> str:
    """`document` with the text between the result markers replaced by `markdown` (appended when absent)."""
    block = f"{RESULTS_BEGIN}\n{markdown.rstrip()}\n{RESULTS_END}"
    if RESULTS_BEGIN in document and RESULTS_END in document:
        head, rest = document.split(RESULTS_BEGIN, 1)
        return head + block + rest.split(RESULTS_END, 1)[1]
    return document.rstrip() + "\n\n" + block + "\n"


def write_report(path: Path, markdown: str) -> None:
    """Write via a temporary file and rename, so a failed run never leaves a half-written report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(markdown, encoding="utf-8")
    temporary.replace(path)
