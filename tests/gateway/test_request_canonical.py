"""The pure parts of the gateway's request canonicalisation: paths and hosts (gateway/proxy/canonical.py), the
matching of deny lists, policies and routes on them, the header scrub (gateway/proxy/headers.py), and the
headers of the gateway's own pages. The end-to-end bypasses are in test_request_canonical_e2e.py."""

from __future__ import annotations

import pytest

from gateway import access
from gateway.config import Route, Upstream
from gateway.proxy import headers as fast
from gateway.proxy.canonical import BadRequest, canonical_host, canonical_path, decision_path
from policies.matching import host_matches, path_matches


@pytest.mark.parametrize("raw, canonical", [
    ("/", "/"), ("/admin", "/admin"), ("/%61dmin", "/admin"), ("/%7e%2D%2e_x", "/~-._x"), ("//admin", "/admin"),
    ("/./admin", "/admin"), ("/x/../admin", "/admin"), ("/../../admin", "/admin"), ("/%2e%2E/admin", "/admin"),
    ("/a/b/..", "/a/"), ("/a/.", "/a/"), ("/a//", "/a/"), ("/ADMIN", "/ADMIN"), ("/admin;x=1", "/admin;x=1"),
    ("/%2561dmin", "/%2561dmin"),  # decoded once, by the upstream: it serves "/%61dmin", not "/admin"
    ("/caf%c3%a9", "/caf%C3%A9"), ("/a%20b", "/a%20b"), ("/.well-known/x", "/.well-known/x"),
])
def test_canonical_path(raw, canonical):
    assert canonical_path(raw) == canonical
    assert canonical_path(canonical) == canonical  # canonical paths stay as they are


@pytest.mark.parametrize("raw", ["/%2fadmin", "/admin%2F", "/%5Cadmin", "/%5cadmin", "/a%00", "/%zz", "/%4",
                                 "/a%", "/\\admin", "/a\x01", "/x/..;/admin", "/.;x/admin", "admin", "*", ""])
def test_ambiguous_paths_are_refused(raw):
    with pytest.raises(BadRequest):
        canonical_path(raw)


@pytest.mark.parametrize("canonical, decided", [
    ("/", "/"), ("/ADMIN", "/admin"), ("/admin;x=1", "/admin"), ("/admin/", "/admin"), ("/api/1/approve/",
                                                                                        "/api/1/approve"),
    ("/a;p/b;q/", "/a/b"), ("/caf%C3%A9", "/café"), ("/x/..%3B/admin", "/admin"), ("/%2561dmin", "/%61dmin"),
])
def test_decision_path(canonical, decided):
    assert decision_path(canonical) == decided


@pytest.mark.parametrize("value, host", [
    ("", ""), ("finance.example.com", "finance.example.com"), ("FINANCE.Example.COM", "finance.example.com"),
    ("finance.example.com.", "finance.example.com"), ("finance.example.com.:8443", "finance.example.com"),
    ("127.0.0.1:80", "127.0.0.1"), ("[::1]:443", "[::1]"), ("[2001:DB8::1]", "[2001:db8::1]"), ("host:", "host"),
    ("svc_a.internal", "svc_a.internal"),
])
def test_canonical_host(value, host):
    assert canonical_host(value) == host


@pytest.mark.parametrize("value", ["a, b", "bad host", "a..b", ".", "-a.com", "x:99999", "x:ab", "x:1:2", "[zz]",
                                   "[::1", "café.example", "a/b", "a" * 64 + ".com"])
def test_invalid_hosts_are_refused(value):
    with pytest.raises(BadRequest):
        canonical_host(value)


# ---------------------------------------------------------------------------------------------- matching


def _route(prefix: str = "/", host: str | None = None) -> Route:
    return Route(name="r", kind="http", upstream=Upstream("http", "127.0.0.1", 9000), host=host, path_prefix=prefix)


@pytest.mark.parametrize("prefix, path, matched", [
    ("/admin", "/admin", True), ("/admin", "/admin/", True), ("/admin", "/admin/x", True),
    ("/admin", "/admin;v=1", True), ("/admin", "/administrator", False), ("/admin", "/ADMIN", False),
    ("/admin/", "/admin", True), ("/admin/", "/admin/x", True), ("/admin/", "/administrator", False),
    ("/", "/anything", True),
])
def test_route_prefixes_end_at_a_segment(prefix, path, matched):
    assert _route(prefix).matches("", path) is matched


@pytest.mark.parametrize("pattern, host, matched", [
    ("finance.example.com", "finance.example.com", True), ("Finance.Example.com", "finance.example.com", True),
    ("finance.example.com.", "finance.example.com", True), ("*.example.com", "a.example.com", True),
    ("*.Example.com", "a.example.com", True), ("finance.example.com", "x.finance.example.com", False),
])
def test_route_hosts_ignore_case_and_the_trailing_dot(pattern, host, matched):
    assert _route(host=pattern).matches(host, "/") is matched


@pytest.mark.parametrize("pattern, path", [("/admin", "/ADMIN"), ("/admin/", "/admin"), ("/Admin", "/admin/x"),
                                           ("/api/*/approve", "/api/1/approve/"), ("/api/*/approve", "/API/1/Approve"),
                                           ("/api/*/approve/", "/api/1/approve"), ("/admin", "/admin;jsessionid=1")])
def test_policy_paths_match_the_folded_path(pattern, path):
    assert path_matches(pattern, path)


@pytest.mark.parametrize("pattern, host", [("finance.example.com", "FINANCE.example.com"),
                                           ("finance.example.com", "finance.example.com."),
                                           ("Finance.example.com.", "finance.example.com:8080"),
                                           ("*.example.com", "a.EXAMPLE.com."), ("::1", "[::1]:443"),
                                           ("[::1]", "[::1]")])
def test_policy_hosts_ignore_case_port_and_trailing_dot(pattern, host):
    assert host_matches(pattern, host)


def test_deny_paths_and_methods():
    r = {"deny_paths": ["/admin", "/api/*/approve"], "deny_methods": ["delete", "GET"]}
    assert access.restriction_denies(r, "POST", decision_path(canonical_path("/%41DMIN/x")))
    assert access.restriction_denies(r, "POST", decision_path(canonical_path("/api//1/APPROVE/")))
    assert access.restriction_denies(r, "HEAD", "/x")  # a denied GET denies HEAD
    assert access.restriction_denies(r, "DELETE", "/x")
    assert access.restriction_denies(r, "POST", "/public") is None
    assert access.restriction_denies({"deny_methods": ["POST"]}, "HEAD", "/x") is None


# ---------------------------------------------------------------------------------------------- headers

COOKIE = "ztgate_session"


def _forward(fields, connection: str = ""):
    return fast.forwarded_fields(tuple(fields), cookie_name=COOKIE, forwarded=("10.0.0.9", "https", "app"),
                                 assertion="a.b.c", host=None, drop_authorization=False, connection=connection)


@pytest.mark.parametrize("name", [
    b"X-Ztgate-Assertion", b"X_Ztgate_Assertion", b"x_ztgate_internal", b"X-Ztgate-Whatever", b"X_Forwarded_For",
    b"x_forwarded_host", b"X-Forwarded-Port", b"X-Forwarded-Prefix", b"X-Forwarded-Server", b"Forwarded",
    b"X-Real-IP", b"X_Real_IP", b"True-Client-IP", b"X-Client-IP", b"X-Original-URL", b"X-Rewrite-URL",
    b"X-HTTP-Method-Override", b"X-HTTP-Method", b"X-Method-Override", b"X_HTTP_Method_Override", b"Keep-Alive",
    b"Proxy-Connection", b"Proxy-Authorization",
])
def test_spoofable_and_hop_by_hop_headers_are_dropped(name):
    out = _forward([(b"Host", b"app"), (name, b"forged"), (b"X-Custom_Header", b"kept")])
    assert (name, b"forged") not in out
    assert (b"X-Custom_Header", b"kept") in out
    assert out[-1] == (b"X-Ztgate-Assertion", b"a.b.c")
    assert [v for n, v in out if n.lower() == b"x-forwarded-for"] == [b"10.0.0.9"]


def test_connection_named_fields_go_and_connection_is_rebuilt():
    fields = [(b"Host", b"app"), (b"Connection", b"close, X-Hop, Content-Length, Upgrade"), (b"X-Hop", b"1"),
              (b"Content-Length", b"3"), (b"Upgrade", b"h2c"), (b"TE", b"trailers, deflate"), (b"X-Kept", b"1")]
    out = _forward(fields, "close, X-Hop, Content-Length, Upgrade")
    assert out[:4] == ((b"Host", b"app"), (b"Connection", b"close"), (b"Content-Length", b"3"), (b"X-Kept", b"1"))


def test_a_websocket_upgrade_keeps_its_connection_and_upgrade_headers():
    fields = [(b"Host", b"app"), (b"Connection", b"keep-alive, Upgrade"), (b"Upgrade", b"websocket"),
              (b"Sec-WebSocket-Key", b"k"), (b"Sec-WebSocket-Version", b"13"), (b"TE", b"trailers")]
    out = _forward(fields, "keep-alive, Upgrade")
    assert out[:6] == ((b"Host", b"app"), (b"Connection", b"keep-alive, Upgrade"), (b"Upgrade", b"websocket"),
                       (b"Sec-WebSocket-Key", b"k"), (b"Sec-WebSocket-Version", b"13"), (b"TE", b"trailers"))


def test_connection_naming_a_forwarded_header_cannot_remove_the_gateways():
    out = _forward([(b"Host", b"app"), (b"Connection", b"X-Forwarded-For, X-Ztgate-Assertion"),
                    (b"X-Forwarded-For", b"6.6.6.6")], "X-Forwarded-For, X-Ztgate-Assertion")
    assert [v for n, v in out if n.lower() == b"x-forwarded-for"] == [b"10.0.0.9"]
    assert [v for n, v in out if n.lower() == b"x-ztgate-assertion"] == [b"a.b.c"]
    assert not [n for n, _ in out if n.lower() == b"connection"]


# ---------------------------------------------------------------------------------------------- pages


@pytest.mark.parametrize("outcome", [access.Outcome(access.Verdict.FORBIDDEN, "no"),
                                     access.Outcome(access.Verdict.TERMINATED, "bye"),
                                     access.Outcome(access.Verdict.UNAVAILABLE)])
def test_the_gateways_pages_carry_security_headers(outcome):
    a = access.answer(outcome, browser=True, path="/", cookie_name=COOKIE)
    assert a.headers["Content-Type"].startswith("text/html")
    assert "frame-ancestors 'none'" in a.headers["Content-Security-Policy"]
    assert a.headers["X-Frame-Options"] == "DENY" and a.headers["X-Content-Type-Options"] == "nosniff"


def test_long_paths_are_not_kept_in_the_caches():
    from gateway.proxy import canonical
    from policies.matching import _fold_path_cached

    before = (canonical.canonical_path.cache_info().currsize,
              canonical.decision_path.cache_info().currsize, _fold_path_cached.cache_info().currsize)
    long_path = "/" + "x" * (canonical.CACHED_LENGTH + 1)
    assert canonical.decision_path(canonical.canonical_path(long_path)) == long_path
    after = (canonical.canonical_path.cache_info().currsize,
             canonical.decision_path.cache_info().currsize, _fold_path_cached.cache_info().currsize)
    assert after == before
