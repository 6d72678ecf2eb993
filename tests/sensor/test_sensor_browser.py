"""The sensor in a real Chromium against a real (small) web app that injects it the way the gateway does."""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from pathlib import Path

import pytest

from scoring.events import Kind, Stimulus
from scoring.keys import KeyClass, from_js_code

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
TYPED = "Lazy fix QJ"
TYPING_DELAY_MS = 80

if not os.path.exists(CHROMIUM):  # pragma: no cover
    pytest.skip("no Chromium at /usr/bin/chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

from sensor_app import Recorder, ServerThread, build_app  # noqa: E402  (tests/sensor is on sys.path)


@pytest.fixture(scope="module")
def recorder():
    return Recorder()


@pytest.fixture(scope="module")
def base_url(recorder):
    with ServerThread(build_app(recorder)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context()
    yield ctx
    ctx.close()


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def page_ids_for(recorder, path):
    return {pid for pid, p in recorder.pages.items() if p == path}


def events_of(recorder, page_ids, kind=None):
    out = []
    for m in recorder.snapshot():
        if m.page_id in page_ids:
            ev = m.decoded.events
            out.extend(ev[ev["kind"] == kind] if kind is not None else ev)
    return out


def test_typing_and_pointer_timing_without_characters(context, recorder, base_url):
    page = context.new_page()
    page.goto(f"{base_url}/page1")
    pid = wait_for(lambda: page_ids_for(recorder, "/page1"), what="page served")
    wait_for(lambda: events_of(recorder, pid, Kind.STIMULUS), what="page-ready mark")

    page.click("#field")
    page.keyboard.type(TYPED, delay=TYPING_DELAY_MS)
    page.mouse.move(10, 10)
    page.mouse.move(300, 200, steps=20)
    page.mouse.click(300, 200)
    page.mouse.wheel(0, 300)
    page.click("#pw")
    page.keyboard.type("Qa1", delay=30)
    wait_for(lambda: len(events_of(recorder, pid, Kind.KEY_UP)) >= len(TYPED) + 3, what="key events")
    wait_for(lambda: any(m.decoded.pongs for m in recorder.snapshot() if m.page_id in pid), what="pong")

    downs = events_of(recorder, pid, Kind.KEY_DOWN)
    ups = events_of(recorder, pid, Kind.KEY_UP)
    expected = [from_js_code("Key" + c.upper()) if c != " " else KeyClass.SPACE for c in TYPED]
    assert [int(e["key"]) for e in downs[: len(TYPED)]] == [int(k) for k in expected]
    assert [int(e["key"]) for e in downs[len(TYPED) : len(TYPED) + 3]] == [0, 0, 0]  # password field: no classes

    dwell = [u["t_src"] - d["t_src"] for d, u in zip(downs[: len(TYPED)], ups[: len(TYPED)], strict=True)]
    assert all(0 < x < 1000 for x in dwell), dwell
    down_to_down = [b["t_src"] - a["t_src"] for a, b in zip(downs[: len(TYPED) - 1], downs[1 : len(TYPED)])]
    assert TYPING_DELAY_MS * 0.8 <= statistics.median(down_to_down) <= TYPING_DELAY_MS * 4, down_to_down
    # t_src is timeOrigin + timeStamp: the browser's wall clock, the same machine's as ours here
    assert all(abs(e["t_src"] - e["t_arr"]) < 5000 for e in downs)

    moves = events_of(recorder, pid, Kind.POINTER_MOVE)
    assert len(moves) >= 2
    assert [int(e["detail"]) for e in events_of(recorder, pid, Kind.POINTER_DOWN)][-1] == 1
    assert events_of(recorder, pid, Kind.POINTER_UP) and events_of(recorder, pid, Kind.WHEEL)

    raws = [m.raw for m in recorder.snapshot() if m.page_id in pid]
    for ch in set(TYPED.replace(" ", "")) | set("Qa"):
        assert not any(ch in raw for raw in raws), f"typed character {ch!r} left the browser"
    assert not any(TYPED in raw for raw in raws)
    seqs = [m.decoded.seq for m in recorder.snapshot() if m.page_id in pid and m.decoded.seq is not None]
    assert seqs == list(range(1, len(seqs) + 1))
    assert not recorder.errors


def test_strict_csp_page_runs_its_own_script_and_the_sensor(context, recorder, base_url):
    page = context.new_page()
    console = []
    page.on("console", lambda msg: console.append(msg.text))
    page.add_init_script(
        "window.__violations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    page.goto(f"{base_url}/csp")
    pid = wait_for(lambda: page_ids_for(recorder, "/csp"), what="page served")
    wait_for(lambda: events_of(recorder, pid, Kind.STIMULUS), what="sensor message under CSP")
    page.click("#field")
    page.keyboard.type("ab", delay=20)
    wait_for(lambda: len(events_of(recorder, pid, Kind.KEY_UP)) >= 2, what="keys under CSP")
    assert page.title() == "app-ran"
    assert page.evaluate("window.__violations") == []
    assert not [c for c in console if "Content Security Policy" in c]
    assert any(m.channel == "ws" for m in recorder.snapshot() if m.page_id in pid)


def test_secret_fields_in_web_components_and_shown_passwords_give_no_key_classes(context, recorder, base_url):
    # e.target is the shadow host for a field inside a web component: the sensor once sent those keys' classes
    page = context.new_page()
    page.goto(f"{base_url}/secrets")
    pid = wait_for(lambda: page_ids_for(recorder, "/secrets"), what="page served")
    wait_for(lambda: events_of(recorder, pid, Kind.STIMULUS), what="page-ready mark")
    page.locator("#open-pw input").focus()  # pierces the open shadow root
    page.keyboard.type("qaz", delay=30)
    page.locator("#open-text input").focus()
    page.keyboard.type("qaz", delay=30)
    page.evaluate("document.getElementById('closed-pw').inner.focus()")
    page.keyboard.type("qaz", delay=30)
    page.focus("#shown")
    page.keyboard.type("qaz", delay=30)
    wait_for(lambda: len(events_of(recorder, pid, Kind.KEY_UP)) >= 12, what="key events")
    classes = [int(e["key"]) for e in events_of(recorder, pid, Kind.KEY_DOWN)]
    letters = [int(from_js_code(c)) for c in ("KeyQ", "KeyA", "KeyZ")]
    assert classes == [0, 0, 0] + letters + [0, 0, 0] + [0, 0, 0], classes


def test_unmodified_strict_csp_would_block_the_sensor(context, recorder, base_url):
    # the negative control: the policy is real, and it is csp_with_nonce that lets the sensor in
    page = context.new_page()
    page.add_init_script(
        "window.__violations = [];"
        "document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.violatedDirective));"
    )
    page.goto(f"{base_url}/csp-unmodified")
    wait_for(lambda: page.evaluate("window.__violations.length") > 0, what="a CSP violation")
    assert page.title() == "app-ran"
    assert any(v.startswith("script-src") for v in page.evaluate("window.__violations"))
    pid = page_ids_for(recorder, "/csp-unmodified")
    time.sleep(0.5)
    assert not [m for m in recorder.snapshot() if m.page_id in pid]


def test_navigation_keeps_the_stream_in_one_session(context, recorder, base_url):
    page = context.new_page()
    before = set(recorder.pages)
    page.goto(f"{base_url}/page1")
    first = wait_for(lambda: page_ids_for(recorder, "/page1") - before, what="page1")
    wait_for(lambda: events_of(recorder, first, Kind.STIMULUS), what="page1 sensor")
    page.click("#next")
    page.wait_for_url("**/page2")
    second = wait_for(lambda: page_ids_for(recorder, "/page2") - before, what="page2")
    page.click("#field")
    page.keyboard.type("ok", delay=20)
    wait_for(lambda: len(events_of(recorder, second, Kind.KEY_UP)) >= 2, what="page2 keys (streamed, gzip)")
    sids = {m.sid for m in recorder.snapshot() if m.page_id in first | second}
    assert len(sids) == 1
    assert first.isdisjoint(second)
    second_seqs = sorted(m.decoded.seq for m in recorder.snapshot() if m.page_id in second and m.decoded.seq)
    assert second_seqs[0] == 1  # sequence numbers are per page


def test_spa_navigation_and_dialogs_keep_one_socket(context, recorder, base_url):
    page = context.new_page()
    page.goto(f"{base_url}/spa")
    pid = wait_for(lambda: page_ids_for(recorder, "/spa"), what="spa page")
    wait_for(lambda: events_of(recorder, pid, Kind.STIMULUS), what="spa ready")
    page.click("#field")
    page.click("#go")
    page.wait_for_url("**/spa/next")

    def marks():
        return [(int(e["detail"]), int(e["value"])) for e in events_of(recorder, pid, Kind.STIMULUS)]

    wait_for(lambda: (Stimulus.PAGE_READY, 1) in marks(), what="soft-navigation mark")
    wait_for(lambda: any(d == Stimulus.FIELD_APPEARED for d, _ in marks()), what="field-appeared mark")
    page.click("#alert")  # Playwright dismisses the dialog
    wait_for(lambda: any(d == Stimulus.DIALOG for d, _ in marks()), what="dialog mark")
    assert (Stimulus.PAGE_READY, 0) in marks()
    assert recorder.connections[next(iter(pid))] == 1


def test_reconnects_after_the_server_drops_the_socket(context, recorder, base_url):
    page = context.new_page()
    page.goto(f"{base_url}/reconnect")
    pid = wait_for(lambda: page_ids_for(recorder, "/reconnect"), what="page")
    wait_for(lambda: recorder.connections.get(next(iter(pid)), 0) >= 1, what="first socket")
    page.click("#field")
    page.keyboard.type("abcd", delay=50)
    wait_for(lambda: len(events_of(recorder, pid, Kind.KEY_UP)) >= 4, what="keys after reconnecting")
    assert recorder.connections[next(iter(pid))] == 2
    seqs = [m.decoded.seq for m in recorder.snapshot() if m.page_id in pid and m.decoded.seq is not None]
    assert seqs == list(range(1, len(seqs) + 1))  # nothing lost, nothing repeated across the reconnect


def test_beacon_fallback_without_websocket(context, recorder, base_url):
    page = context.new_page()
    page.add_init_script("window.WebSocket = undefined;")
    before = set(recorder.pages)
    page.goto(f"{base_url}/page1")
    pid = wait_for(lambda: page_ids_for(recorder, "/page1") - before, what="page")
    page.click("#field")
    page.keyboard.type("abc", delay=20)
    wait_for(lambda: len(events_of(recorder, pid, Kind.KEY_UP)) >= 3, what="keys by beacon")
    assert {m.channel for m in recorder.snapshot() if m.page_id in pid} == {"beacon"}


def test_pagehide_sends_what_is_left_by_beacon(context, recorder, base_url):
    page = context.new_page()
    before = set(recorder.pages)
    page.goto(f"{base_url}/page1")
    pid = wait_for(lambda: page_ids_for(recorder, "/page1") - before, what="page")
    wait_for(lambda: events_of(recorder, pid, Kind.STIMULUS), what="sensor")
    page.click("#field")
    page.keyboard.down("KeyA")
    page.keyboard.up("KeyA")
    page.goto("about:blank")  # within the 250 ms flush interval
    wait_for(lambda: events_of(recorder, pid, Kind.KEY_UP), what="key sent at pagehide")


def test_key_table_in_the_browser_equals_python(context, base_url):
    from test_sensor_keytable import ALL_CODES, js_keyclass_block

    page = context.new_page()
    page.goto(f"{base_url}/.ztgate/sensor.js")
    got = page.evaluate(
        "codes => { " + js_keyclass_block() + "; return codes.map(keyClass); }", ALL_CODES
    )
    assert got == [int(from_js_code(c)) for c in ALL_CODES]
