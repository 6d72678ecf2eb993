import base64

import pytest

from gateway.sensor.tokens import PageToken, SensorTokenError, issue, verify

SECRET = b"k" * 32
T0 = 1_763_700_000.0


def reason(token, sid="sid-a", now=T0 + 1, **kw):
    with pytest.raises(SensorTokenError) as info:
        verify(SECRET, token, sid, now, **kw)
    return info.value.reason


def test_roundtrip():
    token = issue(SECRET, "sid-a", T0)
    page = verify(SECRET, token, "sid-a", T0 + 5)
    assert isinstance(page, PageToken)
    assert len(page.page_id) == 24 and page.issued == pytest.approx(T0, abs=1e-3)
    assert "sid-a" not in token
    assert issue(SECRET, "sid-a", T0) != token  # a fresh page id each time
    assert verify(SECRET, issue(SECRET, "sid-a", T0), "sid-a", T0).page_id != page.page_id


def test_url_safe():
    token = issue(SECRET, "sid-a", T0)
    assert all(c.isalnum() or c in "._-" for c in token)


def test_other_session():
    assert reason(issue(SECRET, "sid-b", T0), sid="sid-a") == "other_session"


def test_forged_signature():
    version, payload, mac = issue(SECRET, "sid-a", T0).split(".")
    raw = bytearray(base64.urlsafe_b64decode(payload + "=="))
    raw[0] ^= 1  # another page id
    forged_payload = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert reason(f"{version}.{forged_payload}.{mac}") == "forged"
    assert reason(issue(b"x" * 32, "sid-a", T0)) == "forged"  # another gateway's secret


def test_expired_and_future():
    token = issue(SECRET, "sid-a", T0)
    assert reason(token, now=T0 + 12 * 3600 + 1) == "expired"
    assert verify(SECRET, token, "sid-a", T0 + 12 * 3600 - 1).issued == pytest.approx(T0)
    assert reason(token, now=T0 + 61, lifetime_s=60) == "expired"
    assert reason(token, now=T0 - 120) == "not_yet_valid"


@pytest.mark.parametrize(
    "token",
    ["", "v1", "v1..", "v2.AAAA.AAAA", "v1.AAAA.AAAA", "v1.!!!!.????", "v1.a b.c", "x" * 500, None, 5],
)
def test_malformed(token):
    assert reason(token) == "malformed"


def test_secret_must_be_long_enough():
    with pytest.raises(ValueError):
        issue(b"short", "sid", T0)
    with pytest.raises(ValueError):
        verify(b"short", "v1.a.b", "sid", T0)
