import gzip
import random
import re
import zlib

import brotli
import pytest
import zstandard

from gateway.sensor.inject import (
    InjectionError,
    StreamInjector,
    csp_with_nonce,
    inject_buffered,
    new_nonce,
    sensor_tag,
    should_inject,
)

TAG = b'<script src="/.ztgate/sensor.js" nonce="N" async></script>'
N = "'nonce-abc123'"


# --- CSP ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "policy, expected",
    [
        (None, None),
        ("", ""),
        ("frame-ancestors 'none'", "frame-ancestors 'none'"),
        ("script-src 'self'", f"script-src 'self' {N}"),
        ("script-src 'none'", f"script-src {N}"),
        ("script-src 'nonce-app' 'strict-dynamic'", f"script-src 'nonce-app' 'strict-dynamic' {N}"),
        ("script-src 'sha256-AAAA'", f"script-src 'sha256-AAAA' {N}"),
        # a nonce would disable the page's own 'unsafe-inline': allow by origin instead
        ("script-src 'unsafe-inline'", "script-src 'unsafe-inline' 'self'"),
        ("script-src 'self' 'unsafe-inline'", "script-src 'self' 'unsafe-inline'"),
        ("script-src 'unsafe-inline' 'nonce-app'", f"script-src 'unsafe-inline' 'nonce-app' {N}"),
        ("script-src 'unsafe-inline' 'strict-dynamic'", f"script-src 'unsafe-inline' 'strict-dynamic' {N}"),
        (
            "default-src 'none'",
            f"default-src 'none'; script-src {N}; connect-src 'self'",
        ),
        ("default-src 'self'", f"default-src 'self'; script-src 'self' {N}"),
        ("default-src 'self' 'unsafe-inline'", "default-src 'self' 'unsafe-inline'"),
        (
            "default-src https://cdn.example 'nonce-app'; img-src *",
            f"default-src https://cdn.example 'nonce-app'; script-src https://cdn.example 'nonce-app' {N}; "
            "connect-src https://cdn.example 'self'; img-src *",
        ),
        (
            "script-src-elem 'self'; script-src 'none'",
            f"script-src-elem 'self' {N}; script-src {N}",
        ),
        ("connect-src 'none'", "connect-src 'self'"),
        ("connect-src https://api.example", "connect-src https://api.example 'self'"),
        ("connect-src *", "connect-src *"),
        ("default-src *", f"default-src *; script-src * {N}"),
        (
            "SCRIPT-SRC 'self';  report-uri /csp ; ",
            f"script-src 'self' {N}; report-uri /csp",
        ),
        # only the first of duplicate directives counts in browsers
        ("script-src 'self'; script-src 'none'", f"script-src 'self' {N}; script-src 'none'"),
        # several policies in one header value: each must allow the sensor
        (
            "script-src 'self', default-src 'none'",
            f"script-src 'self' {N}, default-src 'none'; script-src {N}; connect-src 'self'",
        ),
        ("script-src 'self' " + N, "script-src 'self' " + N),
    ],
)
def test_csp_cases(policy, expected):
    assert csp_with_nonce(policy, "abc123") == expected


@pytest.mark.parametrize(
    "policy",
    ["script-src 'self'", "default-src 'none'", "script-src 'unsafe-inline'", "default-src 'self' 'unsafe-inline'"],
)
def test_csp_never_adds_unsafe_sources(policy):
    out = csp_with_nonce(policy, "abc123")
    assert out.lower().count("'unsafe-inline'") == policy.lower().count("'unsafe-inline'")
    assert "unsafe-eval" not in out and "unsafe-hashes" not in out


def test_csp_nonce_must_be_base64():
    with pytest.raises(ValueError):
        csp_with_nonce("script-src 'self'", "a' 'unsafe-inline")
    assert csp_with_nonce("script-src 'self'", new_nonce())


def test_sensor_tag_escapes():
    tag = sensor_tag('t"<x', "n")
    assert b'data-ztgate-token="t&quot;&lt;x"' in tag and b'nonce="n"' in tag and b"async" in tag


# --- buffered ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "body, expected",
    [
        (b"<html><head><title>x</title></head><body>hi</body></html>",
         b"<html><head>" + TAG + b"<title>x</title></head><body>hi</body></html>"),
        (b'<HTML><HEAD lang="en"><TITLE>x', b'<HTML><HEAD lang="en">' + TAG + b"<TITLE>x"),
        (b"<html><header>no</header></head><body>", b"<html><header>no</header>" + TAG + b"</head><body>"),
        (b"<title>x</title><body class=a>hi", b"<title>x</title><body class=a>" + TAG + b"hi"),
        (b"<!-- <head> --><head>x", b"<!-- <head> --><head>" + TAG + b"x"),
        (b"<!DOCTYPE html>\n<p>fragment", b"<!DOCTYPE html>\n" + TAG + b"<p>fragment"),
        (b"\xef\xbb\xbf<!doctype html><html lang=en><p>x",
         b"\xef\xbb\xbf<!doctype html><html lang=en>" + TAG + b"<p>x"),
        (b"plain words", TAG + b"plain words"),
        (b"", TAG),
        (b"<?xml version='1.0'?><html xmlns='x'><head/><p>",
         b"<?xml version='1.0'?><html xmlns='x'>" + TAG + b"<head/><p>"),
    ],
)
def test_buffered_positions(body, expected):
    assert inject_buffered(body, "utf-8", TAG) == expected


def test_buffered_utf16():
    body = "<html><head><title>é</title></head></html>".encode("utf-16")
    out = inject_buffered(body, "utf-16", TAG).decode("utf-16")
    assert out == "<html><head>" + TAG.decode() + "<title>é</title></head></html>"
    out = inject_buffered(body, None, TAG).decode("utf-16")  # BOM only
    assert TAG.decode() in out


def test_buffered_keeps_non_utf8_bytes():
    body = b"<head><title>\xe9\xff</title>"
    assert inject_buffered(body, "latin-1", TAG) == b"<head>" + TAG + b"<title>\xe9\xff</title>"


# --- streaming -----------------------------------------------------------------------------------------------------

PAGE = (
    b"<!DOCTYPE html>\n<!-- a <body> in a comment -->\n<html lang=en><HEAD data-x=\"1\">"
    b"<title>t</title></head><body>" + b"x" * 3000 + b"</body></html>"
)
EXPECTED = inject_buffered(PAGE, "utf-8", TAG)


def run_stream(injector, chunks):
    out = b"".join(injector(c) for c in chunks if c)  # mitmproxy's b"" means the end
    return out + injector(b"")


def test_split_at_every_position():
    assert EXPECTED.count(TAG) == 1 and EXPECTED.index(TAG) > PAGE.index(b"<HEAD")
    for cut in range(len(PAGE) - 2900):
        out = run_stream(StreamInjector(TAG), [PAGE[:cut], PAGE[cut:]])
        assert out == EXPECTED, cut


def test_split_into_every_two_cuts_around_the_marker():
    start = PAGE.index(b"<HEAD")
    end = PAGE.index(b">", start) + 1
    for a in range(start - 3, end + 2):
        for b in range(a, end + 3):
            assert run_stream(StreamInjector(TAG), [PAGE[:a], PAGE[a:b], PAGE[b:]]) == EXPECTED


def test_byte_by_byte():
    injector = StreamInjector(TAG)
    assert run_stream(injector, [PAGE[i : i + 1] for i in range(len(PAGE))]) == EXPECTED
    assert injector.injected


def test_stream_releases_data_once_marker_found():
    injector = StreamInjector(TAG)
    first = injector(b"<html><head>")
    assert first == b"<html><head>" + TAG
    assert injector(b"<body>more") == b"<body>more"
    assert injector(b"") == b""
    assert injector(b"late") == b"late"  # b"" may have been an empty HTTP/2 DATA frame: nothing is lost


def test_empty_chunk_before_marker_settles_injection_at_top_and_keeps_data():
    injector = StreamInjector(TAG)
    assert injector(b"<!doctype html>") == b""
    assert injector(b"") == b"<!doctype html>" + TAG
    assert injector(b"<head>") == b"<head>"


def test_stream_without_marker_injects_at_top_after_hold_limit():
    injector = StreamInjector(TAG, max_hold=100)
    assert injector(b"<!doctype html>" + b"a" * 50) == b""
    out = injector(b"b" * 60)
    assert out == b"<!doctype html>" + TAG + b"a" * 50 + b"b" * 60
    assert injector(b"<head>") == b"<head>"  # exactly once
    assert injector(b"") == b""


def test_short_stream_without_marker():
    assert run_stream(StreamInjector(TAG), [b"just", b" text"]) == TAG + b"just text"
    assert run_stream(StreamInjector(TAG), []) == TAG


def test_unfinished_comment_is_held_until_closed():
    injector = StreamInjector(TAG)
    assert injector(b"<!-- <head> ") == b""
    assert injector(b"--><head>") == b"<!-- <head> --><head>" + TAG


def test_stream_utf16_passes_through():
    body = "<html><head>".encode("utf-16")
    assert run_stream(StreamInjector(TAG), [body[:1], body[1:]]) == body


def compressors():
    def gz(data):
        return gzip.compress(data)

    def deflate_zlib(data):
        return zlib.compress(data)

    def deflate_raw(data):
        c = zlib.compressobj(wbits=-15)
        return c.compress(data) + c.flush()

    def br(data):
        return brotli.compress(data, quality=5)

    def zstd(data):
        return zstandard.ZstdCompressor().compress(data)

    return [("gzip", gz), ("x-gzip", gz), ("deflate", deflate_zlib), ("deflate", deflate_raw), ("br", br),
            ("zstd", zstd)]


@pytest.mark.parametrize("encoding, compress", compressors())
def test_compressed_streams(encoding, compress):
    body = compress(PAGE)
    for size in (1, 7, 64, 4096):
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        assert run_stream(StreamInjector(TAG, content_encoding=encoding), chunks) == EXPECTED, size


def test_zstd_several_frames():
    c = zstandard.ZstdCompressor()
    body = c.compress(PAGE[:100]) + c.compress(PAGE[100:])
    injector = StreamInjector(TAG, content_encoding="zstd")
    assert run_stream(injector, [body[i : i + 10] for i in range(0, len(body), 10)]) == EXPECTED
    assert injector.complete
    first = c.compress(PAGE[:100])
    injector = StreamInjector(TAG, content_encoding="zstd")
    assert run_stream(injector, [first, c.compress(PAGE[100:])]) == EXPECTED  # frame ends with the chunk


def test_gzip_multi_member():
    body = gzip.compress(PAGE[:100]) + gzip.compress(PAGE[100:])
    assert run_stream(StreamInjector(TAG, content_encoding="gzip"), [body]) == EXPECTED


@pytest.mark.parametrize("encoding, compress", compressors())
def test_truncated_bodies_keep_what_arrived_and_say_so(encoding, compress):
    page = PAGE + random.Random(1).randbytes(300_000).hex().encode()
    body = compress(page)
    injector = StreamInjector(TAG, content_encoding=encoding)
    out = run_stream(injector, [body[: len(body) // 2]])
    assert not injector.complete
    assert len(out) > 1000 and inject_buffered(page, "utf-8", TAG).startswith(out)
    whole = StreamInjector(TAG, content_encoding=encoding)
    run_stream(whole, [body])
    assert whole.complete


@pytest.mark.parametrize("encoding, compress", compressors())
def test_corrupt_bodies_raise(encoding, compress):
    with pytest.raises(InjectionError):
        run_stream(StreamInjector(TAG, content_encoding=encoding), [b"\x00garbage\xff" * 10])


def test_unsupported_encoding():
    with pytest.raises(ValueError):
        StreamInjector(TAG, content_encoding="compress")


# --- should_inject -------------------------------------------------------------------------------------------------

HTML = {"Content-Type": "text/html; charset=utf-8"}


@pytest.mark.parametrize(
    "req, resp, status, method, expected",
    [
        ({}, HTML, 200, "GET", True),
        ({}, {"content-type": "application/xhtml+xml"}, 200, "GET", True),
        ({}, {"Content-Type": "TEXT/HTML"}, 404, "POST", True),
        ({}, {"Content-Type": "application/json"}, 200, "GET", False),
        ({}, {"Content-Type": "text/plain"}, 200, "GET", False),
        ({}, {}, 200, "GET", False),
        ({}, HTML, 204, "GET", False),
        ({}, HTML, 304, "GET", False),
        ({}, HTML, 302, "GET", False),
        ({}, HTML, 101, "GET", False),
        ({}, HTML, 200, "HEAD", False),
        ({}, {**HTML, "Content-Disposition": 'attachment; filename="a.html"'}, 200, "GET", False),
        ({}, {**HTML, "Content-Disposition": "inline"}, 200, "GET", True),
        ({"Range": "bytes=0-10"}, {**HTML, "Content-Range": "bytes 0-10/100"}, 206, "GET", False),
        ({}, {**HTML, "Content-Range": "bytes 0-10/100"}, 200, "GET", False),
        ({}, {**HTML, "Content-Encoding": "br"}, 200, "GET", True),
        ({}, {**HTML, "Content-Encoding": "compress"}, 200, "GET", False),
        ({}, {**HTML, "Content-Encoding": "gzip, br"}, 200, "GET", False),
        ({}, {"Content-Type": "text/html; charset=utf-16"}, 200, "GET", False),
        ({"Sec-Fetch-Dest": "document"}, HTML, 200, "GET", True),
        ({"Sec-Fetch-Dest": "iframe"}, HTML, 200, "GET", True),
        ({"Sec-Fetch-Dest": "empty"}, HTML, 200, "GET", False),
        ({"X-Requested-With": "XMLHttpRequest"}, HTML, 200, "GET", False),
        ({"HX-Request": "true"}, HTML, 200, "GET", False),
    ],
)
def test_should_inject(req, resp, status, method, expected):
    assert should_inject(req, resp, status, method=method) is expected


@pytest.mark.parametrize("encoding, compress", compressors())
def test_a_decompression_bomb_is_refused_not_inflated(encoding, compress):
    bomb = compress(b"<html><head></head><body>" + b"\0" * (8 * 2**20))  # 8 MiB of zeros: a few KiB compressed
    injector = StreamInjector(TAG, content_encoding=encoding, max_chunk_output=2**20)
    with pytest.raises(InjectionError, match="decompression bomb"):
        run_stream(injector, [bomb])


@pytest.mark.parametrize("encoding, compress", compressors())
def test_the_chunk_limit_leaves_ordinary_pages_alone(encoding, compress):
    page = PAGE + random.Random(2).randbytes(400_000).hex().encode()  # 800 KB, compresses about 2:1
    body = compress(page)
    chunks = [body[i:i + 16384] for i in range(0, len(body), 16384)]
    injector = StreamInjector(TAG, content_encoding=encoding, max_chunk_output=256 * 1024)
    assert run_stream(injector, chunks) == inject_buffered(page, "utf-8", TAG)
    assert injector.complete


def test_the_caller_hears_why_before_the_stream_is_cut():
    heard = []
    injector = StreamInjector(TAG, content_encoding="gzip", on_error=heard.append)
    with pytest.raises(InjectionError):
        injector(b"\x1f\x8b\x08\x00garbage" * 10)
    assert len(heard) == 1 and "corrupt gzip" in str(heard[0])


_OLD_MARKERS = re.compile(rb"<!--|<head(?:\s[^>]*)?>|</head\s*>|<body(?:\s[^>]*)?>", re.IGNORECASE)


def _old_offset(data: bytes) -> int | None:
    """Where the pattern this module used until the backtracking fix put the tag (the reference)."""
    pos = 0
    while (m := _OLD_MARKERS.search(data, pos)) is not None:
        if m.group(0) == b"<!--":
            end = data.find(b"-->", m.end())
            if end < 0:
                return None
            pos = end + 3
            continue
        return m.start() if m.group(0)[1:2] == b"/" else m.end()
    return None


def test_the_marker_search_puts_the_tag_where_the_old_pattern_did():
    """The open-tag search no longer re-scans the body from every "<head " lacking a ">" (quadratic: 6.2 s for a
    64 KiB body of them, measured by the resource audit); it must find the same places as before."""
    import random

    from gateway.sensor.inject import _find_marker

    pieces = [b"<head", b"<HEAD", b"<head ", b"<head\t", b"<header>", b"<body", b"<body ", b"</head", b"</head >",
              b"<!--", b"-->", b">", b" x=1", b"<html>", b"text", b"\n", b'"', b"<bodyx>", b"</body>"]
    rng = random.Random(7)
    for _ in range(3000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert _find_marker(data, 0)[0] == _old_offset(data), data
    pathological = b"<head " * 20_000  # no ">" anywhere: no marker, and the tag goes to the top
    assert _find_marker(pathological, 0)[0] is None
    assert inject_buffered(pathological, None, b"<script>")[:8] == b"<script>"
