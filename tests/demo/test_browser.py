"""The demo pages in real Chromium: the CSP page's nonce'd script runs (and only it), the SPA switches views
with history.pushState and saves via fetch, the terminal works from the keyboard, the form flow completes.

The browser reaches the app directly with the assertion as an extra header, standing in for the gateway (the
lead's end-to-end tests put the real gateway in between)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not shutil.which("chromium") and not __import__("os").path.exists("/usr/bin/chromium"),
                       reason="needs /usr/bin/chromium"),
]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture
async def page(demo, gw_keys) -> AsyncIterator:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = await browser.new_context(
            base_url=demo.url, extra_http_headers={"X-Ztgate-Assertion": gw_keys.mint()}
        )
        page = await context.new_page()
        page.console_errors = []
        page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
        yield page
        await browser.close()


async def test_csp_page_runs_only_the_nonced_script(page):
    await page.goto("/csp")
    await page.wait_for_function("document.getElementById('csp-status').textContent === 'csp-ok'")
    assert await page.text_content("#csp-canary") == "blocked"
    await page.fill("#csp-text", "typing works")
    assert await page.input_value("#csp-text") == "typing works"
    assert any("Content Security Policy" in e for e in page.console_errors)  # the canary was refused


async def test_profile_spa_navigates_with_push_state_and_saves(page):
    await page.goto("/profile")
    await page.wait_for_function("document.getElementById('profile-status').textContent === 'loaded'")
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    await page.click("#tab-edit")
    assert page.url.endswith("/profile/edit") and await page.is_visible("#view-edit")
    await page.fill("#display_name", "Alice E.")
    await page.fill("#department", "Platform")
    await page.click("#save")
    await page.wait_for_function("document.getElementById('profile-status').textContent === 'saved'")
    assert page.url.endswith("/profile") and await page.text_content("#show-display_name") == "Alice E."
    await page.go_back()  # popstate: back to the edit view, still no page load
    assert await page.is_visible("#view-edit")
    assert await page.evaluate("performance.getEntriesByType('navigation').length") == 1
    await page.reload()  # a deep link to the edit view renders it, with the saved data
    await page.wait_for_function("document.getElementById('profile-status').textContent === 'loaded'")
    assert await page.is_visible("#view-edit") and await page.input_value("#department") == "Platform"
    assert page.console_errors == []


async def test_terminal_from_the_keyboard(page):
    await page.goto("/terminal")
    await page.wait_for_function("document.getElementById('term-status').textContent === 'connected'")
    await page.wait_for_function("document.getElementById('screen').textContent.includes('$ ')")
    await page.click("#screen")
    await page.keyboard.type("echo helo")
    await page.keyboard.press("Backspace")
    await page.keyboard.type("lo world")
    await page.keyboard.press("Enter")
    await page.wait_for_function("document.getElementById('screen').textContent.includes('hello world\\n')")
    screen = await page.text_content("#screen")
    assert "echo hello world\nhello world\n" in screen
    await page.keyboard.type("whoami")
    await page.keyboard.press("Enter")
    await page.wait_for_function("document.getElementById('screen').textContent.includes('sub=u-alice')")
    assert page.console_errors == []


async def test_expense_form_flow(page):
    await page.goto("/form")
    await page.fill("#name", "Alice")
    await page.fill("#amount", "99.90")
    await page.fill("#description", "Team lunch")
    assert await page.text_content("#description-count") == "10 / 2000 characters"
    await page.fill("#approval_code", "4242")
    await page.click("#submit")
    await page.wait_for_selector("#result")
    assert "EXP-00001" in await page.text_content("#result")
    await page.click("#another")
    assert page.url.endswith("/form")
    assert page.console_errors == []
