"""Real Chromium, driven by Playwright, with key events dispatched at planned times through CDP.

`type_plan(cdp, plan)` sleeps until each event's monotonic target time and fires `Input.dispatchKeyEvent` without
waiting for the previous one to be acknowledged (an acknowledgement takes 5-40 ms here, longer than many flight
times), so overlapping keys (rollover) keep their recorded overlap. Each event carries the moment it left Python as
its CDP `timestamp`, which the page sees as `event.timeStamp`: a real keyboard's events carry the time the OS took
them in (on X, the server's event time), not the moment the browser got round to them. Without it, the browser's
own queueing on a busy machine (stalls of 20-60 ms measured here) bunched keys at the page that no keyboard would
have bunched. The sender's own lateness stays in, as it would for a program injecting input on a busy machine;
`DispatchReport` holds how late each send left Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .plan import KeyEvent, TypingPlan, timeline
from .schedule import play

if TYPE_CHECKING:
    from playwright.async_api import Browser, CDPSession, Page

CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)


class DispatchError(RuntimeError):
    """Chromium refused one or more key events."""


@dataclass(frozen=True, slots=True)
class DispatchReport:
    """How late each event left for the browser, against its planned time (ms; positive = late)."""

    lateness_ms: tuple[float, ...]

    def summary(self) -> dict[str, float]:
        return summarize(self.lateness_ms)


def summarize(values: tuple[float, ...] | list[float]) -> dict[str, float]:
    """n, mean, sd, median, p95 of |x|, max |x|: the shape every timing report in the harness uses."""
    if not values:
        return {"n": 0}
    absolute = sorted(abs(v) for v in values)
    stats = {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "median": statistics.median(values),
        "p95_abs": absolute[min(len(absolute) - 1, round(0.95 * (len(absolute) - 1)))],
        "max_abs": absolute[-1],
    }
    return {"n": len(values), **{k: round(v, 2) for k, v in stats.items()}}


@contextlib.asynccontextmanager
async def chromium(executable_path: str = CHROMIUM_PATH) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable_path, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            await browser.close()


async def open_cdp(page: Page) -> CDPSession:
    return await page.context.new_cdp_session(page)


async def dispatch(cdp: CDPSession, event: KeyEvent) -> None:
    """One key event, awaited (for callers that react to events one at a time, like the relay agent)."""
    await cdp.send("Input.dispatchKeyEvent", event.cdp_params(time.time()))


async def type_plan(cdp: CDPSession, plan: TypingPlan, *, t0: float | None = None) -> DispatchReport:
    """Dispatch every key down/up of `plan` at `t0 + offset` (t0 on `time.monotonic()`, seconds; default: now + 50 ms).

    Returns the lateness of every send; raises `DispatchError` if Chromium rejected any event (after all were sent).
    """
    start = time.monotonic() + 0.05 if t0 is None else t0
    in_flight: list[asyncio.Future[Any]] = []

    def send(event: KeyEvent) -> None:
        # tasks start in creation order, so the browser receives events in plan order
        in_flight.append(asyncio.ensure_future(cdp.send("Input.dispatchKeyEvent", event.cdp_params(time.time()))))

    lateness = await play(timeline(plan), send, start)
    results = await asyncio.gather(*in_flight, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise DispatchError(f"{len(failures)} of {len(results)} key events failed; first: {failures[0]!r}")
    return DispatchReport(tuple(lateness))
