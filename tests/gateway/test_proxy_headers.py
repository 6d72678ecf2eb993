"""The addon's one-pass header handling (gateway/proxy/headers.py) gives what mitmproxy's Headers and Request API
give for the same operations, and the addon's per-request caches follow the state they cache: the route target
(config reload), which routes the policies read requests for (policy reload). Real mitmproxy objects; no
timing."""

from __future__ import annotations

import time

import pytest
from mitmproxy import http

from gateway.proxy import headers as fast
from gateway.proxy.addon import ZtgateAddon
from gateway.proxy.master import connection_strategy
from tests.support.inprocess import CONFIG, memory_gateway

COOKIE = "ztgate_session"

HEADER_SETS = [
    [(b"Host", b"app.example:8080"), (b"Accept", b"*/*"), (b"Cookie", b"ztgate_session=tok")],
    [(b"host", b"a"), (b"COOKIE", b"x=1; ztgate_session=tok; y=2"), (b"Cookie", b"z=3"),
     (b"X-Forwarded-For", b"6.6.6.6"), (b"x-forwarded-for", b"7.7.7.7"), (b"X-Ztgate-Assertion", b"forged"),
     (b"x-ztgate-internal", b"guess"), (b"Accept", b"text/html"), (b"accept", b"application/xhtml+xml")],
    [(b"Host", b"a"), (b"Cookie", b"ztgate_session=tok"), (b"Cookie", b"ztgate_session=other; k=v"),
     (b"Authorization", b"Bearer abc"), (b"X-Forwarded-Host", b"evil"), (b"User-Agent", b"curl/8")],
    [(b"Accept", b"application/json"), (b"Cookie", b'a="q;uoted"; ztgate_session="tok"'),
     (b"Content-Type", b"application/x-www-form-urlencoded"), (b"X-Forwarded-Proto", b"https")],
    [(b"Host", b"caf\xc3\xa9.example"), (b"User-Agent", b"Mozilla/5.0 \xff"), (b"X-Requested-With", b"XMLHttpRequest"),
     (b"Sec-Fetch-Mode", b"cors")],
    # the session cookie alone in its header (the fast paths), quoted, padded, empty, or after white space
    [(b"Host", b"a"), (b"Cookie", b'ztgate_session="tok" '), (b"Cookie", b"ztgate_session=other")],
    [(b"Host", b"a"), (b"Cookie", b"ztgate_session="), (b"Cookie", b" ztgate_session=tok"), (b"Cookie", b"k=v")],
    [(b"Cookie", b"ztgate_session_x=1"), (b"Cookie", b" ztgate_session=tok"), (b"Cookie", b"ztgate_session=t\xc3\xa9")],
]


def _request(fields, http_version=b"HTTP/1.1", authority=b""):
    return http.Request("127.0.0.1", 8080, b"GET", b"http", authority, b"/x", http_version, http.Headers(fields),
                        b"", None, time.time(), time.time())


def _the_api_way(req: http.Request, *, forwarded, assertion, upstream, preserve_host, drop_authorization):
    """The Headers/Request operations the addon used to do one by one."""
    headers = req.headers
    for name in ("X-Ztgate-Assertion", "x-ztgate-internal"):
        if name in headers:
            del headers[name]
    if drop_authorization and "authorization" in headers:
        del headers["authorization"]
    values = headers.get_all("cookie")
    if values:
        kept = [fast.strip_cookie(v, COOKIE) if COOKIE + "=" in v else v for v in values]
        headers.set_all("cookie", [k for k in kept if k])
    client_ip, scheme, host = forwarded
    headers["X-Forwarded-For"], headers["X-Forwarded-Proto"], headers["X-Forwarded-Host"] = client_ip, scheme, host
    headers["X-Ztgate-Assertion"] = assertion
    original = req.host_header
    req.scheme, req.host, req.port = upstream
    if preserve_host and original:
        req.host_header = original


@pytest.mark.parametrize("fields", HEADER_SETS)
def test_read_agrees_with_headers_get_and_request_cookies(fields):
    req = _request(fields)
    seen = fast.read(req.headers.fields)
    for name in ("host", "accept", "authorization", "x-requested-with", "sec-fetch-mode", "user-agent",
                 "content-type"):
        assert seen.get(name) == req.headers.get(name, "")
    assert fast.cookie(seen.cookies, COOKIE) == req.cookies.get(COOKIE)


@pytest.mark.parametrize("fields", HEADER_SETS)
@pytest.mark.parametrize("preserve_host", [False, True])
@pytest.mark.parametrize("drop_authorization", [False, True])
def test_forwarded_fields_equal_the_api_operations(fields, preserve_host, drop_authorization):
    forwarded, assertion, upstream = ("10.0.0.9", "https", "app.example"), "a.b.c", ("http", "10.1.2.3", 9000)
    expected = _request(fields)
    _the_api_way(expected, forwarded=forwarded, assertion=assertion, upstream=upstream, preserve_host=preserve_host,
                 drop_authorization=drop_authorization)
    req = _request(fields)
    original = req.host_header
    host = (original.encode("utf-8", "surrogateescape") if original else None) if preserve_host else b"10.1.2.3:9000"
    got = fast.forwarded_fields(req.headers.fields, cookie_name=COOKIE, forwarded=forwarded, assertion=assertion,
                                host=host, drop_authorization=drop_authorization)
    assert got == expected.headers.fields


# ---------------------------------------------------------------------------------------------- caches



def test_route_target_follows_a_config_reload(tmp_path):
    gw = memory_gateway(tmp_path)
    addon = ZtgateAddon(gw)
    assert addon._target(gw.config.routes[0]).host_header == b"127.0.0.1:9000"
    reloaded = memory_gateway(tmp_path, CONFIG.replace("127.0.0.1:9000", "127.0.0.1:9001")).config.routes[0]
    assert reloaded.name == gw.config.routes[0].name
    assert addon._target(reloaded).host_header == b"127.0.0.1:9001"


def test_request_policies_answer_follows_the_policy_set(tmp_path):
    gw = memory_gateway(tmp_path)
    route = gw.config.routes[0]
    before = gw.monitor.evaluates_requests(route)

    class ReadsRequests:
        digest = "x"

        def uses_request(self, name: str) -> bool:
            return True

    gw.policies.current = ReadsRequests()  # what a reload does: a new set replaces the old
    assert gw.monitor.evaluates_requests(route) is True
    assert before is False  # the shipped defaults read no request facts on this route


def test_connection_strategy_is_eager_only_with_raw_tcp_listeners():
    http_only = ["reverse:http://127.0.0.1:1@127.0.0.1:8080"]
    assert connection_strategy(http_only) == "lazy"  # no wasted connection to the control plane per client
    assert connection_strategy(http_only + ["reverse:tcp://10.0.0.5:5900@127.0.0.1:15900"]) == "eager"  # VNC


@pytest.mark.parametrize("content_types", [[], ["text/plain"], ["text/html"], ["TEXT/HTML; charset=utf-8"],
                                           ["application/xhtml+xml"], ["application/json"], [" text/html ;q"],
                                           ["text/plain", "text/html"], ["text/html", "text/html"]])
def test_sensor_html_precheck_only_skips_what_should_inject_refuses(content_types):
    from gateway.sensor import inject

    response = http.Headers([(b"Content-Type", c.encode()) for c in content_types])
    if inject.should_inject(http.Headers(), response, 200):
        assert inject.html_content_type(response.fields)
    assert inject.html_content_type(response.fields) == (len(content_types) > 1 or (
        len(content_types) == 1 and content_types[0].split(";")[0].strip().lower() in ("text/html",
                                                                                     "application/xhtml+xml")))
