"""The demo app's pages over real HTTP, with assertions signed by a test key served from a real JWKS endpoint."""

from __future__ import annotations

import re

import httpx
import pytest

PAGES = ["/", "/form", "/profile", "/profile/edit", "/csp", "/terminal", "/static/app.css", "/static/terminal.js",
         "/static/profile.js"]


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_answers_with_a_valid_assertion(demo, auth, path):
    async with httpx.AsyncClient(base_url=demo.url) as client:
        response = await client.get(path, headers=auth())
    assert response.status_code == 200, response.text[:300]


async def test_home_shows_who_the_gateway_says_the_user_is(demo, auth):
    async with httpx.AsyncClient(base_url=demo.url) as client:
        page = (await client.get("/", headers=auth(ztgate_state="step_up_required", groups=["a&b", "ops"]))).text
    for expected in ["u-alice", "alice@example.com", "Alice Example", "a&amp;b, ops", "urn:ztgate:acr:mfa",
                     "pwd, otp", "step_up_required"]:
        assert expected in page
    for link in ["/form", "/profile", "/terminal", "/csp", "/api/items", "/api/whoami", "/download", "/big.html"]:
        assert f'href="{link}' in page


async def test_claim_values_are_escaped(demo, auth):
    async with httpx.AsyncClient(base_url=demo.url) as client:
        page = (await client.get("/", headers=auth(name="<script>alert(1)</script>"))).text
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)" in page


@pytest.mark.parametrize("path", ["/", "/form", "/api/items", "/static/app.css", "/does-not-exist"])
async def test_no_assertion_is_401_everywhere(demo, path):
    async with httpx.AsyncClient(base_url=demo.url) as client:
        response = await client.get(path)
    assert response.status_code == 401
    assert "only reachable through the ztgate gateway" in response.text
    assert response.headers["www-authenticate"].startswith("X-Ztgate-Assertion")


async def test_unknown_path_with_assertion_is_404(demo, auth):
    async with httpx.AsyncClient(base_url=demo.url) as client:
        response = await client.get("/does-not-exist", headers=auth())
    assert response.status_code == 404


async def test_healthz_needs_no_assertion(demo):
    async with httpx.AsyncClient(base_url=demo.url) as client:
        response = await client.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok")


async def test_csp_page_has_a_strict_nonce_policy_matching_its_script(demo, auth):
    async with httpx.AsyncClient(base_url=demo.url) as client:
        first = await client.get("/csp", headers=auth())
        second = await client.get("/csp", headers=auth())
    policy = first.headers["content-security-policy"]
    match = re.fullmatch(r"script-src 'nonce-([A-Za-z0-9_-]+)'; object-src 'none'; base-uri 'none'", policy)
    assert match, policy
    assert f'<script nonce="{match.group(1)}">' in first.text
    assert "csp-ok" in first.text and 'id="csp-text"' in first.text
    assert second.headers["content-security-policy"] != policy  # a fresh nonce per response


@pytest.mark.parametrize("path", ["/form", "/profile", "/terminal"])
async def test_scripts_carry_a_per_response_nonce(demo, auth, path):
    async with httpx.AsyncClient(base_url=demo.url) as client:
        pages = [(await client.get(path, headers=auth())).text for _ in range(2)]
    nonces = [re.findall(r'<script nonce="([^"]+)"', page) for page in pages]
    assert nonces[0] and nonces[1] and nonces[0] != nonces[1]
    assert all("<script>" not in page for page in pages)


async def test_expense_form_posts_and_shows_a_result_page(demo, auth):
    form = {"name": "Alice", "cost_center": "CC-4100", "amount": "123.45",
            "description": "Train to the customer\nand back", "approval_code": "7788"}
    async with httpx.AsyncClient(base_url=demo.url) as client:
        page = await client.get("/form", headers=auth())
        assert 'method="post" action="/form"' in page.text and 'type="password"' in page.text
        first = await client.post("/form", data=form, headers=auth())
        second = await client.post("/form", data=form, headers=auth())
    assert first.status_code == 200
    assert "Expense claim EXP-00001 submitted" in first.text
    assert "EUR 123.45" in first.text and "CC-4100" in first.text
    assert "7788" not in first.text  # the approval code is never echoed
    assert "EXP-00002" in second.text


async def test_expense_form_errors_keep_what_was_typed(demo, auth):
    form = {"name": "", "cost_center": "CC-1", "amount": "twelve", "description": "keep <this>",
            "approval_code": "12"}
    async with httpx.AsyncClient(base_url=demo.url) as client:
        response = await client.post("/form", data=form, headers=auth())
    assert response.status_code == 400
    for message in ["name is required", "amount must be a number", "approval code must be 4 to 32"]:
        assert message in response.text
    assert "keep &lt;this&gt;" in response.text and 'value="CC-1"' in response.text


async def test_expense_form_rejects_json_with_415(demo, auth):
    async with httpx.AsyncClient(base_url=demo.url) as client:
        response = await client.post("/form", json={"name": "x"}, headers=auth())
    assert response.status_code == 415


async def test_slow_waits_and_reports(demo, auth):
    async with httpx.AsyncClient(base_url=demo.url) as client:
        response = await client.get("/slow", params={"ms": 50}, headers=auth())
        bad = await client.get("/slow", params={"ms": "soon"}, headers=auth())
        too_long = await client.get("/slow", params={"ms": 10**9}, headers=auth())
    assert response.json() == {"slept_ms": 50}
    assert bad.status_code == 400 and "must be an integer" in bad.text
    assert too_long.status_code == 400 and "between 0 and" in too_long.text
