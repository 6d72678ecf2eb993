"""The remote operator: types human rhythm through a delayed path and reacts only to what it has seen.

It connects to the agent (normally through `DelayRelay`, so every message and every observation crosses the
added delay) and works in a closed loop, as a person watching a remote screen does:

1. watch the page (pipelined `observe` requests every `observe_interval_ms`, like a screen stream) until the
   field is visible, focused and empty (on a web terminal: until the screen ends with the shell's prompt); wait a
   human reaction time; type the sentence burst with the Aalto recording's own timing;
2. with probability `typo_probability` hit a neighbouring key instead of one lower-case letter, keep watching until
   the typo is visible, react, press Backspace and go on with the correct key and the rest of the recording;
3. when the field shows the whole sentence, react and press Enter (`submit`); a terminal then prints the
   command's output and a new prompt.

Within a burst the rhythm is the recording's; every reaction waits for an observation that came back over the
delayed path, so reactions grow by the added round trip. Outcomes hold timing and counts, never characters.

Process: `python -m bench.scenarios.operator --connect 127.0.0.1:PORT --participant ID ...` prints a JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import aalto
from .browser import summarize
from .keymap import BACKSPACE, ENTER, spec_for_char
from .plan import KeyEvent, PlannedStroke, TypingPlan, field_values, for_surface, timeline
from .protocol import MAX_LINE_BYTES, Observation, ProtocolError, decode, encode, key_message
from .relay import parse_hostport
from .schedule import play

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


class AgentLink:
    """Client side of the agent protocol: fire-and-forget keys, request/reply observations."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader_task = asyncio.create_task(self._read_replies())
        self.backspaces_sent = 0
        self.errors: list[str] = []

    @classmethod
    async def connect(cls, host: str, port: int) -> AgentLink:
        reader, writer = await asyncio.open_connection(host, port, limit=MAX_LINE_BYTES)
        return cls(reader, writer)

    async def close(self) -> None:
        self._writer.close()
        self._reader_task.cancel()
        await asyncio.gather(self._reader_task, return_exceptions=True)

    async def drain(self) -> None:
        await self._writer.drain()

    def send_key(self, event: KeyEvent) -> None:
        if event.type != "keyUp" and event.key.code == "Backspace":
            self.backspaces_sent += 1
        self._writer.write(encode(key_message(event)))

    def request_nowait(self, message: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        self._next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next_id] = future
        self._writer.write(encode({**message, "id": self._next_id}))
        return future

    async def request(self, message: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.request_nowait(message), timeout_s)

    async def watch(
        self,
        selector: str,
        expect: str,
        until: Callable[[Observation], bool],
        *,
        interval_ms: float,
        timeout_s: float,
    ) -> tuple[Observation, int]:
        """Observe every `interval_ms` without waiting for replies (a stream of screens) until `until` holds.

        Returns the satisfying observation and how many were requested. Replies arrive in order; the ones still
        in flight when the condition is met are dropped.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pending: collections.deque[asyncio.Future[dict[str, Any]]] = collections.deque()
        next_send = loop.time()
        sent = 0
        try:
            while True:
                now = loop.time()
                if now > deadline:
                    raise TimeoutError(f"page did not reach the awaited state within {timeout_s} s")
                if now >= next_send:
                    pending.append(self.request_nowait({"op": "observe", "selector": selector, "expect": expect}))
                    sent += 1
                    next_send = max(next_send + interval_ms / 1000.0, now)  # fell behind: no catch-up burst
                wait = max(0.0, next_send - loop.time())
                if pending:
                    await asyncio.wait([pending[0]], timeout=wait)
                else:
                    await asyncio.sleep(wait)
                while pending and pending[0].done():
                    reply = pending.popleft().result()
                    if reply.get("op") != "observed":
                        raise ProtocolError(f"agent answered observe with {reply.get('op')}: {reply.get('error')}")
                    observation = Observation.from_message(reply)
                    if until(observation):
                        return observation, sent
        finally:
            for future in pending:
                future.cancel()

    async def _read_replies(self) -> None:
        while line := await self._reader.readline():
            message = decode(line)
            future = self._waiting.pop(message.get("id"), None) if isinstance(message.get("id"), int) else None
            if future is not None:
                if not future.done():
                    future.set_result(message)
            elif message.get("op") == "error":
                self.errors.append(str(message.get("error")))
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("agent closed the connection"))


CURSOR = " "  # the demo terminal's cursor cell ends the screen's text


@dataclass(frozen=True, slots=True)
class Surface:
    """Where the operator types and what it looks for on screen: a form field (`prompt` None), or a web terminal
    whose screen ends with `prompt` when the shell waits for a command."""

    selector: str
    prompt: str | None = None

    def ready(self) -> tuple[str, Callable[[Observation], bool]]:
        """(expect, until) for an empty line waiting for input."""
        if self.prompt is None:
            return "", lambda o: o.visible and o.focused and o.value_length == 0
        return self.prompt + CURSOR, lambda o: o.visible and o.focused and o.matches

    def showing(self, text: str) -> tuple[str, Callable[[Observation], bool]]:
        """(expect, until) for a line that shows `text`."""
        if self.prompt is None:
            return text, lambda o: o.matches and o.value_length == len(text)
        return self.prompt + text + CURSOR, lambda o: o.matches


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    selector: str = "#f"
    terminal_prompt: str | None = None  # typing into a web terminal whose prompt is this (None: a form field)
    observe_interval_ms: float = 16.0  # a 60 fps screen stream
    reaction_ms: float = 250.0  # think time after seeing what it waited for
    reaction_sd_ms: float = 40.0
    reaction_min_ms: float = 120.0
    typo_probability: float = 0.5  # per sentence
    submit: bool = True
    max_keys: int | None = None
    max_gap_ms: float = 1500.0
    watch_timeout_s: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.typo_probability <= 1.0:
            raise ValueError(f"typo_probability must be in [0, 1], got {self.typo_probability}")
        if self.observe_interval_ms <= 0 or self.reaction_ms < 0 or self.reaction_sd_ms < 0:
            raise ValueError("observe_interval_ms must be > 0; reaction_ms and reaction_sd_ms >= 0")

    @property
    def surface(self) -> Surface:
        return Surface(self.selector, self.terminal_prompt)


@dataclass(slots=True)
class SentenceOutcome:
    origin: str  # "aalto:<participant>/<section>"
    keystrokes: int
    typo: bool
    correction_backspace: int | None  # ordinal of the correcting Backspace among all Backspaces sent on the link
    field_wait_ms: float  # start watching -> saw the empty focused field (operator clock)
    typo_wait_ms: float | None  # typo sent -> saw it
    reactions_ms: list[float]  # the sampled think times used
    observations: int
    lateness_ms: list[float] = field(default_factory=list)


class Operator:
    def __init__(self, link: AgentLink, config: OperatorConfig) -> None:
        self.link = link
        self.config = config
        self.rng = random.Random(config.seed)

    def _reaction(self) -> float:
        c = self.config
        return max(c.reaction_min_ms, self.rng.gauss(c.reaction_ms, c.reaction_sd_ms))

    async def _watch(self, watched: tuple[str, Callable[[Observation], bool]]) -> tuple[float, int]:
        expect, until = watched
        started = time.monotonic()
        _, polls = await self.link.watch(
            self.config.selector,
            expect,
            until,
            interval_ms=self.config.observe_interval_ms,
            timeout_s=self.config.watch_timeout_s,
        )
        return (time.monotonic() - started) * 1000.0, polls

    async def _burst(self, plan: TypingPlan, outcome: SentenceOutcome) -> None:
        outcome.lateness_ms += await play(timeline(plan), self.link.send_key, time.monotonic())
        await self.link.drain()

    async def _react(self, outcome: SentenceOutcome) -> None:
        reaction = self._reaction()
        outcome.reactions_ms.append(reaction)
        await asyncio.sleep(reaction / 1000.0)

    async def type_sentence(self, plan: TypingPlan) -> SentenceOutcome:
        outcome = SentenceOutcome(plan.origin, len(plan.strokes), False, None, 0.0, None, [], 0)
        surface = self.config.surface
        waited, polls = await self._watch(surface.ready())
        outcome.field_wait_ms, outcome.observations = waited, polls
        await self._react(outcome)

        typo_at = self._typo_position(plan) if self.rng.random() < self.config.typo_probability else None
        if typo_at is None:
            await self._burst(plan, outcome)
        else:
            outcome.typo = True
            wrong = self._neighbour(plan.strokes[typo_at].key.text)
            typo_stroke = replace(plan.strokes[typo_at], key=spec_for_char(wrong)[0])
            before = TypingPlan(plan.strokes[:typo_at] + (typo_stroke,), plan.origin)
            events = timeline(before)
            split = next(i for i, e in enumerate(events) if e.stroke == typo_at and e.type != "keyUp") + 1
            t0 = time.monotonic()
            outcome.lateness_ms += await play(events[:split], self.link.send_key, t0)
            typo_sent = time.monotonic()
            # a person sees the typo while still releasing keys: watch from the typo's key down, not after the burst
            releases = asyncio.create_task(play(events[split:], self.link.send_key, t0))
            shown = field_values(before)[-1]
            try:
                _, polls = await self._watch(surface.showing(shown))
                outcome.observations += polls
                outcome.typo_wait_ms = (time.monotonic() - typo_sent) * 1000.0
                # the think time runs from the moment of seeing, while the fingers finish releasing keys
                await asyncio.gather(self._react(outcome), releases)
            except BaseException:
                releases.cancel()
                raise
            outcome.lateness_ms += releases.result()
            # Backspace with the typo's own dwell, then the right key after the recording's flight into it
            dwell = typo_stroke.up_ms - typo_stroke.down_ms
            flight = plan.strokes[typo_at].down_ms - plan.strokes[typo_at - 1].down_ms
            rest = plan.sliced(typo_at).shifted(min(max(flight, 60.0), 400.0))
            outcome.correction_backspace = self.link.backspaces_sent
            await self._burst(TypingPlan((PlannedStroke(0.0, dwell, BACKSPACE), *rest.strokes), plan.origin), outcome)
            outcome.keystrokes += 2
        if self.config.submit:
            final = plan.expected_text
            waited, polls = await self._watch(surface.showing(final))
            outcome.observations += polls
            await self._react(outcome)
            await self._burst(TypingPlan((PlannedStroke(0.0, 90.0, ENTER),), plan.origin), outcome)
            outcome.keystrokes += 1
        return outcome

    def _typo_position(self, plan: TypingPlan) -> int | None:
        """A lower-case letter, not the first stroke, typed without Shift held: where a typo is plain to inject."""
        shift_until = -1.0
        candidates = []
        for i, stroke in enumerate(plan.strokes):
            if stroke.key.code in ("ShiftLeft", "ShiftRight"):
                shift_until = max(shift_until, stroke.up_ms)
            elif i > 0 and stroke.key.text.isalpha() and stroke.key.text.islower() and stroke.down_ms > shift_until:
                candidates.append(i)
        return self.rng.choice(candidates) if candidates else None

    def _neighbour(self, letter: str) -> str:
        row = next(r for r in _ROWS if letter in r)
        i = row.index(letter)
        options = [row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)]
        return self.rng.choice(options)


def outcome_report(outcome: SentenceOutcome) -> dict[str, Any]:
    """Loggable: timing and counts only."""
    report = asdict(outcome)
    report["lateness_ms"] = summarize(outcome.lateness_ms)
    return report


async def run(host: str, port: int, plans: list[TypingPlan], config: OperatorConfig) -> list[SentenceOutcome]:
    link = await AgentLink.connect(host, port)
    try:
        operator = Operator(link, config)
        outcomes = []
        for plan in plans:
            try:
                outcomes.append(await operator.type_sentence(plan))
            except TimeoutError:  # the page never showed what the operator waited for: go on with the next one
                print(json.dumps({"timeout": plan.origin}), file=sys.stderr, flush=True)
        return outcomes
    finally:
        await link.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scenarios.operator", description=__doc__.split("\n")[0])
    parser.add_argument("--connect", required=True, help="HOST:PORT of the agent (or of a relay in front of it)")
    parser.add_argument("--participant", help="Aalto participant id (default: chosen by --seed)")
    parser.add_argument("--enrol-sentences", type=int, default=5, help="skip these; type the participant's test part")
    parser.add_argument("--sentences", type=int, default=3)
    parser.add_argument("--max-keys", type=int, default=None)
    parser.add_argument("--typo-probability", type=float, default=0.5)
    parser.add_argument("--reaction-ms", type=float, default=250.0)
    parser.add_argument("--reaction-sd-ms", type=float, default=40.0)
    parser.add_argument("--observe-interval-ms", type=float, default=16.0)
    parser.add_argument("--selector", default="#f")
    parser.add_argument("--terminal-prompt", help="type into a web terminal whose screen shows this prompt")
    parser.add_argument("--no-submit", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        host, port = parse_hostport(args.connect)
        config = OperatorConfig(
            selector=args.selector,
            terminal_prompt=args.terminal_prompt,
            observe_interval_ms=args.observe_interval_ms,
            reaction_ms=args.reaction_ms,
            reaction_sd_ms=args.reaction_sd_ms,
            typo_probability=args.typo_probability,
            submit=not args.no_submit,
            max_keys=args.max_keys,
            seed=args.seed,
        )
        participant_id = args.participant or aalto.select_participants(1, args.seed)[0]
        split = aalto.split_user(aalto.load_participant(participant_id), args.enrol_sentences)
    except (ValueError, aalto.DatasetError) as exc:
        parser.error(str(exc))
    surface = "form" if config.terminal_prompt is None else "terminal"
    lines = (for_surface(aalto.typing_plan(s, max_keys=config.max_keys, max_gap_ms=config.max_gap_ms), surface)
             for s in split.test[: args.sentences])
    plans = [p for p in lines if p is not None]
    outcomes = asyncio.run(run(host, port, plans, config))
    print(json.dumps({"participant": participant_id, "sentences": [outcome_report(o) for o in outcomes]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
