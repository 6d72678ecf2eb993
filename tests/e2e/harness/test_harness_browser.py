"""Real Chromium typing planned timing through CDP; the page's own event.timeStamp is the yardstick."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from bench.scenarios import aalto, script
from bench.scenarios.browser import chromium, open_cdp, summarize, type_plan
from bench.scenarios.keymap import spec_for_char
from bench.scenarios.plan import PlannedStroke, TypingPlan, timeline
from bench.scenarios.testpage import FIELD_SELECTOR, read_record, recorder_app, serve, timing_errors

pytestmark = [pytest.mark.slow, pytest.mark.browser]

if not Path("/usr/bin/chromium").exists():
    pytest.skip("needs /usr/bin/chromium", allow_module_level=True)


def _first_replayable(seed: int) -> aalto.Sentence:
    for pid in aalto.select_participants(5, seed=seed):
        split = aalto.split_user(aalto.load_participant(pid), 5)
        for sentence in split.test:
            if aalto.reproduces_submission(sentence):
                return sentence
    raise AssertionError("no replayable sentence")


async def test_cdp_typing_matches_plan_in_the_page() -> None:
    sentence = _first_replayable(seed=21)
    human = aalto.typing_plan(sentence, max_gap_ms=1500)
    plans = {"aalto": human, "fixed-50ms": script.fixed_interval_plan(sentence.submitted[:25], interval_ms=50)}
    report: dict[str, object] = {}
    async with serve(recorder_app()) as base, chromium() as browser:
        for name, plan in plans.items():
            page = await browser.new_page()
            await page.goto(base + "/")
            await page.wait_for_selector(FIELD_SELECTOR, state="visible")
            cdp = await open_cdp(page)
            dispatch = await type_plan(cdp, plan)
            await page.wait_for_function(
                "n => window.__rec.keys.length >= n", arg=2 * len(plan.strokes), timeout=5000
            )
            record = await read_record(page)
            value = await page.input_value(FIELD_SELECTOR)
            assert value == plan.expected_text  # the text really appeared (compared, never printed)
            errors = timing_errors(plan, record)
            report[name] = {
                "keystrokes": len(plan.strokes),
                "dispatch_lateness_ms": summarize(dispatch.lateness_ms),
                "dwell_error_ms": summarize(errors["dwell"]),
                "flight_error_ms": summarize(errors["flight"]),
            }
            # loose sanity only: events arrive in order and the rhythm is not destroyed
            assert all(abs(e) < 250 for e in errors["flight"])
            await page.close()
    assert human.expected_text == sentence.submitted
    print("\n" + json.dumps(report, indent=1))


async def test_the_page_sees_the_time_a_key_was_sent_not_when_the_browser_got_to_it() -> None:
    # the harness stamps each key with its send time (browser.py); if Chromium stopped honouring CDP timestamps the
    # page would silently time the browser's own queueing again. Intervals are what the harness relies on, so that
    # is what is checked (Chromium may move a stamp that predates the page's own start-up)
    spec, _ = spec_for_char("k")
    down, up = timeline(TypingPlan((PlannedStroke(0, 80, spec),)))
    async with serve(recorder_app()) as base, chromium() as browser:
        page = await browser.new_page()
        await page.goto(base + "/")
        await page.wait_for_selector(FIELD_SELECTOR, state="visible")
        cdp = await open_cdp(page)
        pressed = time.time()
        await cdp.send("Input.dispatchKeyEvent", down.cdp_params(pressed))
        await asyncio.sleep(0.15)  # as if the browser had been busy before the release reached it
        await cdp.send("Input.dispatchKeyEvent", up.cdp_params(pressed + 0.02))
        await page.wait_for_function("() => window.__rec.keys.length >= 2", timeout=5000)
        keys = (await read_record(page))["keys"]
        assert keys[1]["t"] - keys[0]["t"] == pytest.approx(20.0, abs=2.0)  # the stamps' dwell, not the 150 ms gap
