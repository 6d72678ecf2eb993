"""`ztgate scenario NAME` / `ztgate scenario --all [--ci] --json`: the takeover scenarios against the whole product.

One run of the command starts the product (`Stack`: `ztgate demo-upstream` and `ztgate run` with the shipped default
policies, a users file with one user per Aalto participant, Redis with a unique key prefix or the memory store),
enrols every participant (an offline profile from their first sentences imported through the admin API, or for a
few participants in the browser, by typing those sentences), then runs the scenarios' repetitions concurrently in
one real Chromium (a browser context each) and writes docs/scenarios.md.

A repetition signs in through the gateway's login page (password + TOTP), opens the demo app's expense form and
types into its line-item field, where Enter "checks" a line and a new field appears after 0.4-0.9 s (the stimulus a
person reacts to). Who types:
- genuine / impostor: a typist beside the browser (`Operator` over a direct TCP link to the `Agent` that drives the
  page) replays a participant's recorded sentences closed-loop: waits to see the empty field, reacts, types, looks
  at the result, presses Enter;
- relay: the same operator as a separate process, reaching the agent through a `relay.py` process that adds the
  round trip;
- with `surface=terminal` the typist works in the demo app's web terminal instead (its page carries the sensor, its
  WebSocket the same keystrokes and the shell's output): a command line per sentence, Enter runs it, and the next
  one starts once the prompt is back; genuine runs type their first `form_first` sentences in the form, then move
  to the terminal in the same session, as a worker moves between the apps of one host;
- script: key events dispatched at fixed or replayed times as soon as the field exists, no reaction;
- hijack: the session cookie replayed by another client (source address 127.0.0.2, a curl User-Agent).
The gateway's decision is read from the admin API (session state, and the decision's `decided_at`).
Typed characters stay in memory in this process and the browser; nothing here logs them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import aalto, script
from .agent import Agent
from .browser import chromium, open_cdp, type_plan
from .keymap import ENTER
from .operator import CURSOR, AgentLink, Operator, OperatorConfig
from .plan import PlannedStroke, TypingPlan, for_surface, without_codes
from .report import (SCENARIO_NAMES, SEVERITY, Action, Scenario, ScenarioResult, render_markdown, replace_results,
                     results_json, write_report)
from .stack import ROOT, Stack, ScenarioUser, offline_profile

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

FIELD = "#lines input[data-current]"  # the demo form's current line-item field (gateway/demo/pages.py)
FORM_PATH = "/form"
TERMINAL_PATH = "/terminal"
SCREEN = "#screen"  # the demo web terminal's screen (gateway/demo/static/terminal.js)
ENROL_SENTENCES = 5
# A profile in use for a while has learned the user's reactions from clean sessions (scoring.learn); a fresh one
# knows only its enrolment's five. 40 is about a week of an expense form's line items; --reaction-history 0 is day one
REACTION_HISTORY = 40
QUIET_AFTER_LOAD_S = 3.2  # the first key must not count as a reaction to the page load (a setup delay, not a person)
MAX_GAP_MS = 1500.0

# The scenario set. `sentences`: sentences typed per run (genuine: its sentence-sessions).
FULL_SET = (
    Scenario("genuine", 16, {"sentences": 10}),
    Scenario("genuine", 5, {"sentences": 10, "surface": "terminal", "form_first": 2}),
    Scenario("impostor", 20, {"sentences": 6}),
    Scenario("impostor", 4, {"sentences": 6, "surface": "terminal"}),
    Scenario("relay", 3, {"added_rtt_ms": 30, "jitter_ms": 5}),
    Scenario("relay", 6, {"added_rtt_ms": 60, "jitter_ms": 5}),
    Scenario("relay", 15, {"added_rtt_ms": 110, "jitter_ms": 5}),
    Scenario("relay", 5, {"added_rtt_ms": 110, "jitter_ms": 5, "surface": "terminal"}),
    Scenario("relay", 5, {"added_rtt_ms": 200, "jitter_ms": 5}),
    Scenario("script", 12, {"mode": "fixed-50ms"}),
    Scenario("script", 3, {"mode": "fixed-50ms", "surface": "terminal"}),
    Scenario("script", 15, {"mode": "replay"}),
    Scenario("hijack", 20),
)
CI_SET = (  # one of each, to prove the paths in CI; rates come from the full set
    Scenario("genuine", 1, {"sentences": 2}),
    Scenario("genuine", 1, {"sentences": 3, "surface": "terminal", "form_first": 1}),
    Scenario("impostor", 1, {"sentences": 3}),
    Scenario("relay", 1, {"added_rtt_ms": 110, "jitter_ms": 5}),
    Scenario("script", 1, {"mode": "fixed-50ms"}),
    Scenario("hijack", 1),
)
FULL_POOL, CI_POOL = 24, 4  # participants (gateway users)
# of them enrolled by typing in the browser (CI proves in-gateway enrolment in tests/e2e/test_sensor_through_gateway)
FULL_BROWSER_ENROL, CI_BROWSER_ENROL = 3, 0

STATE_ACTIONS: dict[str, Action] = {
    "active": "allow",
    "step_up_required": "step_up",
    "restricted": "restrict",
    "terminated": "terminate",
}


def action_of(session: dict[str, Any]) -> Action:
    """A session record (admin API JSON) to the action it shows; unknown states count as allow."""
    return STATE_ACTIONS.get(str(session.get("state")), "allow")


def first_participant(scenario: Scenario, browser_enrolled: int, pool: int) -> int:
    """Where in the pool a row's repetitions start. Rows that all started at the pool's head signed its first users
    in 14 times within minutes (the browser-enrolled ones, whose runs come together), which no person does and which
    locked them out of a gateway that counted accepted TOTP codes against its 10 attempts per 15 minutes: the
    terminal rows start two thirds into the pool and the hijack row after the browser-enrolled users, so nobody
    signs in more than 9 times in the whole set."""
    if scenario.parameters.get("surface") == "terminal":
        return 2 * pool // 3
    return browser_enrolled if scenario.name == "hijack" else 0


def reaction_model(participant: str) -> tuple[float, float]:
    """A simulated person's think time after seeing the field (median, sd in ms): medians spread around the shipped
    population's 450 ms with a between-person log-sd of 0.2, within-person sd a quarter of the median."""
    z = random.Random(f"reaction:{participant}").gauss(0.0, 1.0)
    median = 450.0 * math.exp(0.2 * max(-2.5, min(2.5, z)))
    return median, 0.25 * median


def enrolment_reactions(participant: str, n: int = 0) -> list[float]:
    """The reactions the simulated person would have shown to the field appearing in their enrolment sentences:
    the operator's think time (normal, at least 120 ms) plus the wait for the next 16 ms screen observation."""
    rng = random.Random(f"enrol-reactions:{participant}")
    median, sd = reaction_model(participant)
    return [max(120.0, rng.gauss(median, sd)) + rng.uniform(0.0, 16.0) for _ in range(n or ENROL_SENTENCES)]


def sentence_plans(sentences: Sequence[aalto.Sentence], surface: str = "form") -> list[TypingPlan]:
    plans = (for_surface(aalto.typing_plan(s, max_gap_ms=MAX_GAP_MS), surface) for s in sentences)
    return [p for p in plans if p is not None]


def terminal_prompt(user: ScenarioUser) -> str:
    from gateway.demo.fake_shell import prompt_for

    return prompt_for(user.email)


async def open_terminal(bench: Bench, page: Page) -> float:
    """The demo app's web terminal in this tab, connected and focused; returns when it was ready."""
    await page.goto(f"{bench.stack.url}{TERMINAL_PATH}")
    await page.wait_for_function("() => document.getElementById('term-status')?.textContent === 'connected'",
                                 timeout=10_000)
    await page.focus(SCREEN)  # focus from script: no pointer event that would count as a reaction
    return time.monotonic()


# ---------------------------------------------------------------------------------------------- shared run state


@dataclass
class Bench:
    stack: Stack
    browser: Browser
    splits: dict[str, aalto.UserSplit]
    order: list[str]  # participant ids
    slots: asyncio.Semaphore
    admin: Any  # httpx.AsyncClient with the admin token
    totp_used: dict[str, int] = field(default_factory=dict)
    totp_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    browser_enrolled: list[str] = field(default_factory=list)
    ready: dict[str, asyncio.Event] = field(default_factory=dict)  # set once the participant is enrolled
    enrolment_notes: list[str] = field(default_factory=list)
    reaction_history: int = 0  # prompt reactions offline profiles learned from earlier sessions, beyond enrolment

    def user(self, participant: str) -> ScenarioUser:
        return self.stack.users[participant]

    def participant_for(self, scenario: Scenario, rep: int, shift: int = 0) -> str:
        """Whose session a repetition runs in (`shift` further on: another participant, e.g. an impostor)."""
        n = len(self.order)
        return self.order[(rep + first_participant(scenario, len(self.ready), n) + shift) % n]

    def reactions_of(self, participant: str) -> list[float]:
        return enrolment_reactions(participant, ENROL_SENTENCES + self.reaction_history)

    async def session(self, sid: str) -> dict[str, Any]:
        r = await self.admin.get(f"/.ztgate/admin/api/sessions/{sid}")
        r.raise_for_status()
        return r.json()

    async def totp_code(self, user: ScenarioUser) -> str:
        """A code from a 30 s window this user has not signed in with yet (codes are one-time)."""
        import pyotp

        lock = self.totp_locks.setdefault(user.name, asyncio.Lock())
        async with lock:
            while int(time.time() // 30) <= self.totp_used.get(user.name, -1):
                await asyncio.sleep(30 - time.time() % 30 + 0.3)
            self.totp_used[user.name] = int(time.time() // 30)
            return pyotp.TOTP(user.totp_secret).now()


async def sign_in(bench: Bench, context: BrowserContext, user: ScenarioUser, *,
                  enrolling: bool = False) -> tuple[Page, str, float]:
    """Log in through the gateway's login page; returns the form page, the session id, and when the page loaded."""
    import jwt

    event = bench.ready.get(user.participant)
    if event is not None and not enrolling:
        await event.wait()
    page = await context.new_page()
    await page.goto(f"{bench.stack.url}/.ztgate/login?next={FORM_PATH}")
    await page.fill("#username", user.name)
    await page.fill("#password", user.password)
    await page.fill("#otp", await bench.totp_code(user))
    async with page.expect_navigation(url=f"**{FORM_PATH}", timeout=20_000):
        await page.click("button[type=submit]")
    loaded = time.monotonic()
    await page.wait_for_selector(FIELD, timeout=10_000)
    await page.focus(FIELD)  # focus from script: no pointer event that would count as a reaction
    cookie = next(c["value"] for c in await context.cookies() if c["name"] == "ztgate_session")
    sid = jwt.decode(cookie, options={"verify_signature": False})["sid"]
    return page, sid, loaded


class KeyLogAgent(Agent):
    """The agent, noting when each key down reaches the browser (for keystrokes-to-decision)."""

    def __init__(self, page: Page, cdp: Any) -> None:
        super().__init__(page, cdp)
        self.key_downs: list[float] = []

    def _dispatch(self, message: dict[str, Any], reply: Any, observer: Any) -> None:
        if message.get("op") == "keydown":
            self.key_downs.append(time.monotonic())
        super()._dispatch(message, reply, observer)


class Watch:
    """Polls the session while input runs: its state, and when the gateway decided."""

    def __init__(self, bench: Bench, sid: str, interval_s: float = 0.5) -> None:
        self.bench, self.sid, self.interval_s = bench, sid, interval_s
        self.strongest: Action = "allow"
        self.decided_at: float | None = None  # time.monotonic() of the first non-allow decision
        self.rule: str = ""
        self.last: dict[str, Any] = {}
        self.cadence_alarm_keys: int | None = None  # evidence keystrokes when cadence first read >= 0.5, sufficient
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> None:
        with contextlib.suppress(Exception):  # one failed poll is not a result
            session = await self.bench.session(self.sid)
            self.last = session
            cadence = ((session.get("assessment") or {}).get("signals") or {}).get("cadence") or {}
            if self.cadence_alarm_keys is None and cadence.get("sufficient") and float(cadence.get("score") or 0) >= 0.5:
                self.cadence_alarm_keys = int(((session.get("assessment") or {}).get("evidence") or {})
                                              .get("keystrokes", 0))
            action = action_of(session)
            if action != "allow" and self.decided_at is None:
                decided = (session.get("decision") or {}).get("decided_at")
                now = time.monotonic()
                self.decided_at = now - max(0.0, time.time() - float(decided)) if decided else now
                self.rule = str((session.get("decision") or {}).get("rule_id", ""))
            if SEVERITY[action] > SEVERITY[self.strongest]:
                self.strongest = action

    async def _poll(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.interval_s)

    def start(self) -> Watch:
        self._task = asyncio.create_task(self._poll())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.check()

    def signal_note(self) -> str:
        """What the detectors said last (scores and estimates only), for the report."""
        signals = ((self.last.get("assessment") or {}).get("signals") or {})
        parts = []
        for name in ("cadence", "relay", "automation"):
            sig = signals.get(name) or {}
            if not sig:
                continue
            text = f"{name} {float(sig.get('score') or 0):.2f}{'' if sig.get('sufficient') else '(insufficient)'}"
            details = sig.get("details") or {}
            if name == "relay" and "added_latency_ms" in details:
                text += (f" est {details['added_latency_ms']:.0f} ms (low {details.get('added_latency_ci_low_ms', 0):.0f})"
                         f" from {(sig.get('evidence') or {}).get('samples', 0)} reactions"
                         f" ({details.get('prompt_reactions', 0):.0f} prompt, "
                         f"{details.get('correction_reactions', 0):.0f} correction)")
            if name == "automation" and "prompt_starts" in details:
                text += (f" ({details.get('fast_starts', 0):.0f} of {details['prompt_starts']:.0f} starts after a prompt"
                         f" fast, last {details.get('last_start_ms', 0):.0f} ms)")
            parts.append(text)
        if self.cadence_alarm_keys is not None:
            parts.append(f"cadence >= 0.5 first seen at {self.cadence_alarm_keys} keystrokes")
        return "; ".join(parts)

    def pending(self) -> bool:
        """A policy condition visibly met but not yet enforced (step-ups with a grace period)."""
        signals = ((self.last.get("assessment") or {}).get("signals") or {})
        return any(s.get("sufficient") and float(s.get("score") or 0) >= 0.5 for s in signals.values())

    async def linger(self, grace_s: float = 32.0) -> None:
        """After the input: wait out a step-up's grace period if one can be pending."""
        await self.check()
        deadline = time.monotonic() + grace_s
        while self.strongest == "allow" and self.pending() and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            await self.check()


def result_of(scenario: Scenario, rep: int, watch: Watch, key_downs: list[float], *, note: str,
              sentences: int = 0) -> ScenarioResult:
    start = key_downs[0] if key_downs else time.monotonic()
    end = key_downs[-1] if key_downs else start
    at = watch.decided_at
    genuine = scenario.name == "genuine"
    return ScenarioResult(
        scenario=scenario.label, repetition=rep, decision=watch.strongest,
        seconds_to_decision=None if at is None else round(max(0.0, at - start), 2),
        keystrokes_to_decision=None if at is None else sum(t <= at for t in key_downs),
        false_alarms=int(genuine and watch.strongest != "allow"), keystrokes=len(key_downs),
        seconds=round(end - start, 2),
        note="; ".join(x for x in (note, f"rule {watch.rule}" if watch.rule else "", watch.signal_note()) if x),
        sentences=sentences)


async def quiet_after_load(loaded: float) -> None:
    await asyncio.sleep(max(0.0, loaded + QUIET_AFTER_LOAD_S - time.monotonic()))


async def local_typing(page: Page, participant: str, plans: Sequence[TypingPlan], seed: int,
                       stop: Any, prompt: str | None = None) -> tuple[list[float], int]:
    """A person at the machine: operator over a direct link to the agent (in the form, or with `prompt` in the web
    terminal). Returns key-down times and sentences."""
    agent = KeyLogAgent(page, await open_cdp(page))
    server = await agent.serve()
    link = await AgentLink.connect("127.0.0.1", server.sockets[0].getsockname()[1])
    median, sd = reaction_model(participant)
    operator = Operator(link, OperatorConfig(selector=FIELD if prompt is None else SCREEN, terminal_prompt=prompt,
                                             reaction_ms=median, reaction_sd_ms=sd, seed=seed, watch_timeout_s=10.0))
    done = 0
    try:
        for plan in plans:
            if stop():
                break
            try:
                await operator.type_sentence(plan)
                done += 1
            except TimeoutError:  # the field did not show what was expected: start the next line afresh
                with contextlib.suppress(Exception):
                    if prompt is None:
                        await page.evaluate("s => { const f = document.querySelector(s); if (f) { f.value = '';"
                                            " f.focus(); } }", FIELD)
                    else:  # Ctrl+U is not in the demo shell; Ctrl+C drops the line and shows a new prompt
                        await page.keyboard.press("Control+c")
    finally:
        await link.close()
        server.close()
        await agent.close()
    return agent.key_downs, done


# ---------------------------------------------------------------------------------------------- the scenarios


async def run_typing(bench: Bench, scenario: Scenario, rep: int) -> ScenarioResult:
    """genuine: the enrolled user types their own test sentences; impostor: another participant's timing."""
    n = len(bench.order)
    owner = bench.participant_for(scenario, rep)
    typist = owner if scenario.name == "genuine" else bench.participant_for(scenario, rep, 1 + rep // n)
    if typist == owner:
        typist = bench.participant_for(scenario, rep, 1) if scenario.name != "genuine" else owner
    count = int(scenario.parameters.get("sentences", 10))
    surface = str(scenario.parameters.get("surface", "form"))
    in_form = count if surface == "form" else int(scenario.parameters.get("form_first", 0))
    sentences = bench.splits[typist].test[:count]
    form_plans = sentence_plans(sentences[:in_form])
    terminal_plans = sentence_plans(sentences[in_form:], "terminal") if surface == "terminal" else []
    note = f"user {owner}" + ("" if typist == owner else f", typist {typist}")
    if owner in bench.browser_enrolled:
        note += ", browser-enrolled"
    if surface == "terminal":
        note += (f", {len(form_plans)} sentences in the form then" if form_plans else ",") + \
            f" {len(terminal_plans)} commands in the terminal"
    context = await bench.browser.new_context()
    try:
        page, sid, loaded = await sign_in(bench, context, bench.user(owner))
        await quiet_after_load(loaded)
        watch = Watch(bench, sid).start()
        stop = lambda: watch.strongest != "allow"  # noqa: E731
        try:
            keys, done = await local_typing(page, typist, form_plans, rep, stop) if form_plans else ([], 0)
            if terminal_plans and not stop():
                await quiet_after_load(await open_terminal(bench, page))
                more, more_done = await local_typing(page, typist, terminal_plans, rep, stop,
                                                     prompt=terminal_prompt(bench.user(owner)))
                keys, done = keys + more, done + more_done
        finally:
            await watch.stop()
        await watch.linger(grace_s=22.0)
        return result_of(scenario, rep, watch, keys, note=note, sentences=done)
    finally:
        await context.close()


async def _process(*args: str) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if not line:
        await proc.wait()
        raise RuntimeError(f"{args[0]} exited with {proc.returncode} before it was ready")
    return proc, json.loads(line)


async def _end(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def relay_budget_s(rtt_ms: float) -> float:
    return 60.0 if rtt_ms >= 110 or rtt_ms < 60 else 120.0


async def run_relay(bench: Bench, scenario: Scenario, rep: int) -> ScenarioResult:
    """operator process -> relay process (adds the round trip) -> agent beside the browser -> page."""
    participant = bench.participant_for(scenario, rep)
    rtt = float(scenario.parameters["added_rtt_ms"])
    budget = relay_budget_s(rtt)
    median, sd = reaction_model(participant)
    terminal = scenario.parameters.get("surface") == "terminal"
    where_typed = (["--selector", SCREEN, "--terminal-prompt", terminal_prompt(bench.user(participant))] if terminal
                   else ["--selector", FIELD])
    context = await bench.browser.new_context()
    procs: list[asyncio.subprocess.Process] = []
    try:
        page, sid, loaded = await sign_in(bench, context, bench.user(participant))
        if terminal:
            loaded = await open_terminal(bench, page)
        agent = KeyLogAgent(page, await open_cdp(page))
        server = await agent.serve()
        try:
            relay, where = await _process(
                "bench.scenarios.relay", "--listen", "127.0.0.1:0", "--target",
                f"127.0.0.1:{server.sockets[0].getsockname()[1]}", "--delay-ms", f"{rtt / 2:g}", "--jitter-ms",
                str(scenario.parameters.get("jitter_ms", 0)), "--seed", str(rep))
            procs.append(relay)
            await quiet_after_load(loaded)
            operator = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.scenarios.operator", "--connect", f"127.0.0.1:{where['port']}",
                "--participant", participant, "--enrol-sentences", str(ENROL_SENTENCES), "--sentences", "10",
                *where_typed, "--reaction-ms", f"{median:.1f}", "--reaction-sd-ms", f"{sd:.1f}",
                "--seed", str(rep), cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            procs.append(operator)
            watch = Watch(bench, sid).start()
            enough = "terminate" if rtt >= 110 else "step_up"
            try:
                while operator.returncode is None:
                    first = agent.key_downs[0] if agent.key_downs else None
                    if SEVERITY[watch.strongest] >= SEVERITY[enough]:
                        break
                    if first is not None and time.monotonic() - first > budget:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(operator.wait()), 0.25)
            finally:
                await _end(operator)
                await watch.stop()
            await watch.linger()
        finally:
            server.close()
            await agent.close()
        keys = [t for t in agent.key_downs if t - agent.key_downs[0] <= budget] if agent.key_downs else []
        return result_of(scenario, rep, watch, keys, note=f"user {participant}, added RTT {rtt:g} ms"
                                                          + (", in the terminal" if terminal else ""))
    finally:
        for proc in procs:
            await _end(proc)
        await context.close()


def script_plans(mode: str, sentences: Sequence[aalto.Sentence], rep: int, surface: str = "form") -> list[TypingPlan]:
    plans = []
    for i, sentence in enumerate(sentences):
        recorded = (script.replayed_plan(sentence, seed=rep * 100 + i) if mode == "replay"
                    else script.fixed_interval_plan(sentence.submitted, interval_ms=50))
        plan = for_surface(recorded, surface)
        if plan is None:
            continue
        enter_at = plan.duration_ms + 50.0
        plans.append(TypingPlan((*plan.strokes, PlannedStroke(enter_at, enter_at + 20.0, ENTER)), plan.origin))
    return plans


async def _until_ready_or_acted(page: Page, ready: tuple[str, Any], watch: Watch, timeout_s: float = 10.0) -> bool:
    """Waits for the element a program types into; False once the gateway has acted (a stepped-up session's
    terminal connection is cut, so its prompt never returns)."""
    deadline = time.monotonic() + timeout_s
    while watch.strongest == "allow":
        try:
            await page.wait_for_function(ready[0], arg=ready[1], timeout=1_000)
            return True
        except Exception:  # Playwright's TimeoutError: look at the session again
            await watch.check()
            if time.monotonic() > deadline:
                raise
    return False


async def run_script(bench: Bench, scenario: Scenario, rep: int) -> ScenarioResult:
    """A program types as soon as the field exists: fixed intervals, or a recording replayed with small noise."""
    participant = bench.participant_for(scenario, rep)
    mode = str(scenario.parameters.get("mode", "fixed-50ms"))
    terminal = scenario.parameters.get("surface") == "terminal"
    plans = script_plans(mode, bench.splits[participant].test[:3], rep, "terminal" if terminal else "form")
    context = await bench.browser.new_context()
    try:
        page, sid, loaded = await sign_in(bench, context, bench.user(participant))
        if terminal:
            loaded = await open_terminal(bench, page)
        await quiet_after_load(loaded)
        cdp = await open_cdp(page)
        keys: list[float] = []
        watch = Watch(bench, sid).start()
        # a program waits for the element it types into: an empty field, or the shell's prompt at the screen's end
        ready = ("s => { const f = document.querySelector(s); return f && f === document.activeElement"
                 " && f.value === ''; }", FIELD) if not terminal else (
                 "([s, p]) => { const f = document.querySelector(s); return f && f === document.activeElement"
                 " && f.textContent.endsWith(p); }", [SCREEN, terminal_prompt(bench.user(participant)) + CURSOR])
        try:
            for plan in plans:
                if not await _until_ready_or_acted(page, ready, watch):
                    break
                t0 = time.monotonic() + 0.02
                keys += [t0 + s.down_ms / 1000.0 for s in plan.strokes]
                await type_plan(cdp, plan, t0=t0)
        finally:
            await watch.stop()
        await watch.linger()
        return result_of(scenario, rep, watch, keys,
                         note=f"user {participant}, {mode}" + (", in the terminal" if terminal else ""))
    finally:
        await context.close()


async def run_hijack(bench: Bench, scenario: Scenario, rep: int) -> ScenarioResult:
    """The session cookie replayed from another client: source address 127.0.0.2 and a curl User-Agent."""
    import httpx

    participant = bench.participant_for(scenario, rep)
    context = await bench.browser.new_context()
    try:
        _, sid, _ = await sign_in(bench, context, bench.user(participant))
        cookie = next(c["value"] for c in await context.cookies() if c["name"] == "ztgate_session")
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=transport, cookies={"ztgate_session": cookie}, timeout=10,
                                     headers={"User-Agent": "curl/8.5.0"}) as thief:
            response = await thief.get(bench.stack.url + FORM_PATH)
        refused = response.status_code in (401, 403) or (
            response.is_redirect and "/.ztgate/" in response.headers.get("location", ""))
        state = action_of(await bench.session(sid))
        decision: Action = state if state != "allow" else ("refused" if refused else "allow")
        return ScenarioResult(scenario.label, rep, decision, None, None,
                              note=f"user {participant}; HTTP {response.status_code} to the replayed cookie")
    finally:
        await context.close()


RUNNERS = {"genuine": run_typing, "impostor": run_typing, "relay": run_relay, "script": run_script,
           "hijack": run_hijack}


async def guarded(bench: Bench, scenario: Scenario, rep: int) -> ScenarioResult:
    async with bench.slots:
        try:
            return await RUNNERS[scenario.name](bench, scenario, rep)
        except Exception as exc:  # one failed run is reported, not fatal for the whole set
            return ScenarioResult(scenario.label, rep, "error", None, None,
                                  note=f"{type(exc).__name__}: {str(exc)[:120]}")


# ---------------------------------------------------------------------------------------------- enrolment


async def enrol_in_browser(bench: Bench, participant: str) -> str:
    """Type the participant's enrolment sentences in the browser until the gateway enrols a profile."""
    user = bench.user(participant)
    started = time.monotonic()
    context = await bench.browser.new_context()
    try:
        page, _, loaded = await sign_in(bench, context, user, enrolling=True)
        await quiet_after_load(loaded)
        keys, _ = await local_typing(page, participant, sentence_plans(bench.splits[participant].enrolment), 0,
                                     lambda: False)
        for _ in range(40):
            if (await bench.admin.get(f"/.ztgate/admin/api/profiles/{user.name}")).status_code == 200:
                bench.browser_enrolled.append(participant)
                return f"{user.name}: enrolled in the browser from {len(keys)} keystrokes in " \
                       f"{time.monotonic() - started:.0f} s"
            await asyncio.sleep(0.5)
    finally:
        await context.close()
    # not enrolled (too few keystrokes?): fall back to the offline profile so the run can go on, and say so
    await bench.stack.import_profile(user, offline_profile(bench.splits[participant], bench.reactions_of(participant)))
    return f"{user.name}: NOT enrolled by the gateway after {len(keys)} keystrokes; offline profile imported instead"


async def enrol_all(bench: Bench, in_browser: int) -> asyncio.Future[list[str]]:
    """Imports offline profiles now; returns the browser enrolments as a running task (their users' runs wait)."""
    browser_ones = bench.order[:in_browser]
    for participant in browser_ones:
        bench.ready[participant] = asyncio.Event()
    for participant in bench.order[in_browser:]:
        await bench.stack.import_profile(bench.user(participant),
                                         offline_profile(bench.splits[participant], bench.reactions_of(participant)))
    bench.enrolment_notes.append(f"{len(bench.order) - in_browser} users: offline profile (scoring.enrol on their "
                                 f"first {ENROL_SENTENCES} sentences, each answering a field that appeared after the "
                                 f"simulated person's reaction time, plus {bench.reaction_history} prompt reactions "
                                 f"learned from earlier clean sessions) imported via PUT /.ztgate/admin/api/profiles")

    async def one(p: str) -> str:
        try:
            async with bench.slots:
                return await enrol_in_browser(bench, p)
        finally:
            bench.ready[p].set()

    return asyncio.gather(*(one(p) for p in browser_ones))


# ---------------------------------------------------------------------------------------------- the command


@dataclass
class RunReport:
    runs: list[tuple[Scenario, list[ScenarioResult]]]
    seconds: float
    notes: list[str]


async def run_set(chosen: Sequence[Scenario], *, pool: int, browser_enrol: int, concurrency: int, seed: int,
                  store: str, progress: bool = True, reaction_history: int = 0) -> RunReport:
    import httpx

    started = time.monotonic()
    participants = aalto.select_participants(pool, seed)
    splits = {p: aalto.split_user(aalto.load_participant(p), ENROL_SENTENCES) for p in participants}
    async with Stack(participants, store=store) as stack, chromium() as browser:
        async with httpx.AsyncClient(base_url=stack.url, timeout=10,
                                     headers={"Authorization": f"Bearer {stack.admin_token}"}) as admin:
            bench = Bench(stack, browser, splits, participants, asyncio.Semaphore(concurrency), admin,
                          reaction_history=reaction_history)
            browser_enrolment = await enrol_all(bench, browser_enrol)
            enrolled_s = time.monotonic() - started
            if progress:
                print(f"[scenarios] {len(participants) - browser_enrol} offline profiles imported after "
                      f"{enrolled_s:.0f} s", file=sys.stderr)
            jobs = schedule_jobs(chosen, participants, set(bench.ready), concurrency)
            tasks = [asyncio.create_task(guarded(bench, scenario, rep)) for _, scenario, rep in jobs]
            results: dict[int, list[ScenarioResult]] = {i: [] for i in range(len(chosen))}
            for done, ((i, _, _), task) in enumerate(zip(jobs, tasks, strict=True), 1):
                results[i].append(await task)
                if progress:
                    r = results[i][-1]
                    print(f"[scenarios] {done}/{len(jobs)} {r.scenario} #{r.repetition}: {r.decision} "
                          f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
            bench.enrolment_notes += await browser_enrolment
            notes = [f"store: {store}; concurrency {concurrency}; {len(participants)} participants (seed {seed}); "
                     f"gateway started and offline profiles imported after {enrolled_s:.0f} s"] + bench.enrolment_notes
    runs = [(scenario, sorted(results[i], key=lambda r: r.repetition)) for i, scenario in enumerate(chosen)]
    return RunReport(runs, time.monotonic() - started, notes)


def expected_seconds(scenario: Scenario) -> float:
    """Rough length of one run, for ordering only: relay runs last their budget, the others their sentences."""
    if scenario.name == "relay":
        return 135.0 if scenario.parameters.get("added_rtt_ms") == 60 else 75.0
    if scenario.name in ("genuine", "impostor"):
        return 12.0 * float(scenario.parameters.get("sentences", 1))
    return 8.0


def schedule_jobs(chosen: Sequence[Scenario], participants: Sequence[str], waiting: set[str],
                  concurrency: int) -> list[tuple[int, Scenario, int]]:
    """Start order (asyncio's semaphore admits in order): longest runs first, so the set ends on short ones.

    Runs of browser-enrolled users must wait for their enrolment (about 90 s), holding a slot while they wait, so
    they go in after the first two waves of the others, longest first too, instead of all at the end where their
    relay runs made a long tail."""
    jobs = [(i, scenario, rep) for i, scenario in enumerate(chosen) for rep in range(scenario.repetitions)]
    jobs.sort(key=lambda j: -expected_seconds(j[1]))

    def owner(job: tuple[int, Scenario, int]) -> str:
        return participants[(job[2] + first_participant(job[1], len(waiting), len(participants))) % len(participants)]

    later = [j for j in jobs if owner(j) in waiting]
    now = [j for j in jobs if owner(j) not in waiting]
    head = 2 * concurrency
    return now[:head] + later + now[head:]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ztgate scenario", description="End-to-end takeover scenarios (issue 8)")
    parser.add_argument("name", nargs="?", choices=SCENARIO_NAMES)
    parser.add_argument("--all", action="store_true", help="every scenario of the set")
    parser.add_argument("--ci", action="store_true", help="the small CI set instead of the full set")
    parser.add_argument("--repetitions", type=int, help="override the set's repetitions")
    parser.add_argument("--concurrency", type=int, help="browser contexts at once (default 8, CI 4)")
    parser.add_argument("--participants", type=int, help="users in the pool (default 24, CI 4)")
    parser.add_argument("--browser-enrol", type=int, help="users enrolled by typing in the browser (default 3, CI 1)")
    parser.add_argument("--store", choices=["redis", "memory"], default="redis")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--out", type=Path, help="markdown report (default docs/scenarios.md for --all without --ci)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reaction-history", type=int, default=REACTION_HISTORY,
                        help="prompt reactions an offline profile has learned from earlier clean sessions, beyond the "
                             f"{ENROL_SENTENCES} of its enrolment sentences (default {REACTION_HISTORY})")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.all and not args.name:
        parser.error("give a scenario NAME or --all")
    if args.repetitions is not None and args.repetitions < 1:
        parser.error("--repetitions must be >= 1")
    chosen = [s for s in (CI_SET if args.ci else FULL_SET) if args.all or s.name == args.name]
    if args.repetitions:
        chosen = [Scenario(s.name, args.repetitions, s.parameters) for s in chosen]
    pool = args.participants or (CI_POOL if args.ci else FULL_POOL)
    enrol = args.browser_enrol if args.browser_enrol is not None else (CI_BROWSER_ENROL if args.ci else
                                                                      FULL_BROWSER_ENROL)
    if pool < 2 or not 0 <= enrol <= pool:
        parser.error("need --participants >= 2 and 0 <= --browser-enrol <= --participants")
    concurrency = args.concurrency or (4 if args.ci else 8)
    if args.reaction_history < 0:
        parser.error("--reaction-history must be >= 0")
    report = asyncio.run(run_set(chosen, pool=pool, browser_enrol=enrol, concurrency=concurrency, seed=args.seed,
                                 store=args.store, reaction_history=args.reaction_history))
    context = (f"Generated by `ztgate scenario {' '.join(argv if argv is not None else sys.argv[1:])}` "
               f"in {report.seconds / 60:.1f} min. " + " ".join(f"{n}." for n in report.notes))
    out = args.out or (ROOT / "docs" / "scenarios.md" if args.all and not args.ci else None)
    if out is not None:
        markdown = render_markdown(report.runs, heading="Measured results", context=context)
        nested = "\n".join("#" + line if line.startswith("#") else line for line in markdown.splitlines())
        existing = out.read_text(encoding="utf-8") if out.exists() else "# Takeover scenarios\n"
        write_report(out, replace_results(existing, nested))
    if args.json:
        data = results_json(report.runs)
        data.update({"seconds": round(report.seconds, 1), "notes": report.notes})
        print(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
