"""Request verdicts from session state (pure)."""

import pytest

from gateway import access
from gateway.access import Verdict
from gateway.store import SessionRecord


def record(**kw) -> SessionRecord:
    return SessionRecord(sid="s1", sub="alice", **kw)


def test_no_session_means_login():
    assert access.decide(None, "GET", "/").verdict == Verdict.LOGIN


def test_states():
    assert access.decide(record(), "POST", "/x").verdict == Verdict.FORWARD
    assert access.decide(record(state="terminated"), "GET", "/").verdict == Verdict.TERMINATED
    assert access.decide(record(state="step_up_required"), "GET", "/").verdict == Verdict.STEP_UP


def test_restrict_blocks_post_allows_get():
    r = record(state="restricted", restrictions={"read_only": True, "deny_paths": ["/admin", "/api/*/delete"]})
    assert access.decide(r, "GET", "/form").verdict == Verdict.FORWARD
    assert access.decide(r, "POST", "/form").verdict == Verdict.FORBIDDEN
    assert access.decide(r, "GET", "/admin/users").verdict == Verdict.FORBIDDEN
    assert access.decide(r, "GET", "/api/items/delete").verdict == Verdict.FORBIDDEN


@pytest.mark.parametrize("url, safe", [
    ("/ok?x=1", "/ok?x=1"), ("//evil.example", "/"), ("https://evil.example/", "/"), ("/\\evil", "/"),
    ("javascript:alert(1)", "/"), ("", "/"), (None, "/"), ("/a\r\nSet-Cookie: x", "/"),
])
def test_safe_next_never_leaves_the_site(url, safe):
    assert access.safe_next(url) == safe


def test_rfc9470_challenge():
    a = access.answer(access.Outcome(Verdict.STEP_UP, "risk too high", {"method": "totp", "max_age": 300}),
                      browser=False, path="/api/x")
    assert a.status == 401
    header = a.headers["WWW-Authenticate"]
    assert header.startswith('Bearer error="insufficient_user_authentication"')
    assert 'acr_values="mfa"' in header and 'max_age="300"' in header


def test_browser_detection():
    assert access.wants_html({"accept": "text/html,application/xhtml+xml"})
    assert not access.wants_html({"accept": "application/json"})
    assert not access.wants_html({"accept": "text/html", "authorization": "Bearer x"})


def test_session_cookies_meet_the_host_prefix_rules():
    """A `__Host-` cookie is kept by browsers only when Secure, with Path=/ and without Domain (config makes
    `__Host-` names require `secure: always`); setting and clearing must both qualify, or sign-out would not stick."""
    for header in (access.session_cookie("__Host-zt", "v", secure=True, max_age=60), access.clear_cookie("__Host-zt", True)):
        attrs = [a.strip().lower() for a in header.split(";")[1:]]
        assert "secure" in attrs and "path=/" in attrs and not any(a.startswith("domain") for a in attrs), header
