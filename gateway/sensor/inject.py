"""Putting the sensor's <script> tag into HTML responses, buffered or streamed, without breaking the page's CSP.

The addon's part:
  - `should_inject(...)` decides; non-HTML, partial, attachment and fragment responses are never touched.
  - a fresh `new_nonce()` per response; `sensor_tag(token, nonce)` is the tag;
  - every Content-Security-Policy and Content-Security-Policy-Report-Only header value goes through
    `csp_with_nonce(value, nonce)`;
  - buffered: `response.content = inject_buffered(response.content, charset, tag)` (mitmproxy re-encodes);
  - streamed: `response.stream = StreamInjector(tag, content_encoding=...)`, then drop Content-Encoding (the stream
    comes out as identity) and Content-Length (chunked).
The injected page must not be stored by caches under its token: a copy served again reuses the page id.
"""

from __future__ import annotations

import html
import re
import secrets
import zlib
from collections.abc import Callable, Mapping

SCRIPT_PATH = "/.ztgate/sensor.js"
DEFAULT_MAX_HOLD = 64 * 1024
# What one network chunk of a compressed page may expand to. HTML compresses about 5-10:1, so a 64 KiB chunk gives
# well under 1 MiB; a chunk that inflates past this is a decompression bomb and must not take the gateway's memory.
DEFAULT_MAX_CHUNK_OUTPUT = 16 * 1024 * 1024
SUPPORTED_ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate", "br", "zstd"})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_HTML_TYPES_RAW = frozenset(t.encode("ascii") for t in _HTML_TYPES)
_DOCUMENT_DESTINATIONS = frozenset({"document", "iframe", "frame", "embed", "object"})
_NONCE_RE = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")


class InjectionError(ValueError):
    """A streamed body could not be decoded (corrupt compression, or one chunk expanding past the limit)."""


def _too_large(encoding: str, limit: int, fed: int) -> InjectionError:
    return InjectionError(f"{encoding} body: a {fed}-byte chunk expands past {limit} bytes; refused as a "
                          "decompression bomb")


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def sensor_tag(token: str, nonce: str, src: str = SCRIPT_PATH) -> bytes:
    """The tag to inject. `async`: the page never waits for the sensor."""
    esc = html.escape
    return (
        f'<script src="{esc(src)}" data-ztgate-token="{esc(token)}" nonce="{esc(nonce)}" async></script>'
    ).encode("ascii")


# ---------------------------------------------------------------------------------------------------------------
# Content-Security-Policy


def _lower(tokens: list[str]) -> list[str]:
    return [t.lower() for t in tokens]


def _has_nonce_or_hash(tokens: list[str]) -> bool:
    return any(t.startswith(("'nonce-", "'sha256-", "'sha384-", "'sha512-")) for t in _lower(tokens))


def _allow_script(tokens: list[str], nonce_source: str) -> list[str]:
    lower = _lower(tokens)
    if "'none'" in lower:
        return [t for t in tokens if t.lower() != "'none'"] + [nonce_source]
    if "'unsafe-inline'" in lower and "'strict-dynamic'" not in lower and not _has_nonce_or_hash(tokens):
        # A nonce would switch 'unsafe-inline' off for the page's own inline scripts (CSP2+). The page already
        # runs any inline script, so allowing our external one by origin is no real widening.
        return tokens if ("'self'" in lower or "*" in tokens) else tokens + ["'self'"]
    return tokens if nonce_source in tokens else tokens + [nonce_source]


def _allow_self_connect(tokens: list[str]) -> list[str]:
    # 'self' matches ws:/wss: to the same host in CSP3 browsers (checked in Chromium by tests/sensor/test_browser.py)
    lower = _lower(tokens)
    kept = [t for t in tokens if t.lower() != "'none'"]
    if "'self'" in lower or "*" in tokens:
        return kept
    return kept + ["'self'"]


def _connect_sources_from_default(tokens: list[str]) -> list[str]:
    # keyword sources of default-src that mean nothing for connections are left out of the copy
    return [
        t
        for t in tokens
        if not (t.startswith("'") and t.lower() not in ("'self'",))
    ]


def _rewrite_policy(policy: str, nonce_source: str) -> str:
    raw = [d for d in policy.split(";")]
    directives: list[tuple[str, list[str], str | None]] = []  # (name, tokens, original text if unchanged)
    for text in raw:
        parts = text.split()
        if not parts:
            continue
        directives.append((parts[0].lower(), parts[1:], text.strip()))

    def first(name: str) -> int | None:
        for i, (n, _, _) in enumerate(directives):
            if n == name:
                return i
        return None

    def replace(i: int, tokens: list[str]) -> None:
        name, old, text = directives[i]
        directives[i] = (name, tokens, text if tokens == old else None)

    script_targets = [i for name in ("script-src-elem", "script-src") if (i := first(name)) is not None]
    default = first("default-src")
    inserted = 0
    if not script_targets and default is not None:
        tokens = directives[default][1]
        allowed = _allow_script(tokens, nonce_source)
        if allowed != tokens:  # default-src already lets the sensor in when nothing had to be added
            directives.insert(default + 1, ("script-src", allowed, None))
            inserted = 1
    for i in script_targets:
        replace(i, _allow_script(directives[i][1], nonce_source))

    connect = first("connect-src")
    if connect is not None:
        replace(connect, _allow_self_connect(directives[connect][1]))
    elif default is not None:
        tokens = directives[default][1]
        if "'self'" not in _lower(tokens) and "*" not in tokens:
            sources = _allow_self_connect(_connect_sources_from_default(tokens))
            directives.insert(default + 1 + inserted, ("connect-src", sources, None))

    out = []
    for name, tokens, text in directives:
        out.append(text if text is not None else " ".join([name, *tokens]))
    return "; ".join(out)


def csp_with_nonce(headers_csp: str | None, nonce: str) -> str | None:
    """One Content-Security-Policy(-Report-Only) header value, extended so that the sensor tag carrying `nonce`
    runs and can reach the gateway; None stays None. Never adds 'unsafe-inline' or 'unsafe-eval'.

    A header value may hold several comma-separated policies; each one is extended (all of them apply).
    """
    if headers_csp is None:
        return None
    if not _NONCE_RE.fullmatch(nonce):
        raise ValueError("a CSP nonce must be base64 characters")
    nonce_source = f"'nonce-{nonce}'"
    policies = [p for p in headers_csp.split(",")]
    rewritten = [_rewrite_policy(p, nonce_source) if p.strip() else p for p in policies]
    return ", ".join(p.strip() for p in rewritten if p.strip())


# ---------------------------------------------------------------------------------------------------------------
# Where the tag goes

# The start of an open <head>/<body> tag (not <header>), a closing </head>, or the start of a comment to skip. An
# open tag's end is found with one find(): a pattern spanning the attributes (`<head(\s[^>]*)?>`) re-scanned the
# rest of the body from every "<head " without a ">" after it, quadratic in a page an upstream may fill with
# attacker-chosen text.
_MARKERS = re.compile(rb"<!--|<(?:head|body)(?=[\s>])|</head\s*>", re.IGNORECASE)
_MAX_TAG = 2048  # a marker tag longer than this (attributes) is not looked for across chunk boundaries
_PROLOGUE = re.compile(
    rb"(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*\?>\s*)?(?:<!doctype[^>]*>\s*)?(?:<html(?:\s[^>]*)?>)?", re.IGNORECASE
)
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _find_marker(data: bytes, start: int) -> tuple[int | None, int]:
    """(insertion offset or None, where the next scan may resume)."""
    pos = start
    while True:
        m = _MARKERS.search(data, pos)
        if m is None:
            return None, max(pos, len(data) - _MAX_TAG)
        token = m.group(0)
        if token == b"<!--":
            end = data.find(b"-->", m.end())
            if end < 0:
                return None, m.start()  # an unfinished comment: rescan it when more data arrives
            pos = end + 3
            continue
        if token[1:2] == b"/":
            return m.start(), m.start()
        end = data.find(b">", m.end())
        if end < 0:
            # no ">" after this opener, so after no later one either: nothing here can complete yet
            return None, max(m.start(), len(data) - _MAX_TAG)
        return end + 1, end + 1


def _fallback_offset(data: bytes) -> int:
    """No <head>/</head>/<body>: after the BOM, XML declaration, doctype and <html> tag (a script before the
    doctype would put the page into quirks mode)."""
    m = _PROLOGUE.match(data)
    return m.end() if m else 0


def _is_wide_charset(charset: str | None) -> bool:
    return bool(charset) and charset.lower().replace("_", "-").startswith(("utf-16", "utf-32"))


def inject_buffered(body: bytes, charset: str | None, tag: bytes) -> bytes:
    """`body` (decoded, identity) with `tag` after <head>, else before </head>, else after <body>, else at the top."""
    if _is_wide_charset(charset) or body.startswith(_UTF16_BOMS):
        encoding = charset if _is_wide_charset(charset) else "utf-16"
        text = body.decode(encoding, errors="surrogateescape")
        narrow = text.encode("utf-8", errors="surrogateescape")
        return inject_buffered(narrow, None, tag).decode("utf-8", errors="surrogateescape").encode(
            encoding, errors="surrogateescape"
        )
    offset, _ = _find_marker(body, 0)
    if offset is None:
        offset = _fallback_offset(body)
    return body[:offset] + tag + body[offset:]


# ---------------------------------------------------------------------------------------------------------------
# Streaming


class _Identity:
    complete = True

    def __init__(self, limit: int) -> None:
        pass

    def feed(self, data: bytes) -> bytes:
        return data


class _Zlib:
    """gzip (possibly several members) and deflate (zlib-wrapped or, as some servers send it, raw)."""

    def __init__(self, limit: int, gzip: bool) -> None:
        self._limit = limit
        self._gzip = gzip
        self._obj: zlib._Decompress | None = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip else None
        self._head = b""

    def feed(self, data: bytes) -> bytes:
        if self._obj is None:  # deflate: decide between zlib and raw on the first two bytes
            self._head += data
            if len(self._head) < 2:
                return b""
            b0, b1 = self._head[0], self._head[1]
            wrapped = (b0 & 0x0F) == 8 and ((b0 << 8) | b1) % 31 == 0
            self._obj = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            data, self._head = self._head, b""
        out, size, fed = [], 0, len(data)
        try:
            while data:
                piece = self._obj.decompress(data, self._limit - size + 1)
                size += len(piece)
                if size > self._limit:
                    raise _too_large("gzip" if self._gzip else "deflate", self._limit, fed)
                out.append(piece)
                data = self._obj.unconsumed_tail
                if data:
                    continue
                if self._obj.eof and self._obj.unused_data:
                    rest = self._obj.unused_data
                    if not self._gzip or not rest.lstrip(b"\0"):
                        break  # trailing garbage/padding after the stream
                    self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    data = rest
        except zlib.error as exc:
            raise InjectionError(f"corrupt {'gzip' if self._gzip else 'deflate'} body: {exc}") from None
        return b"".join(out)

    @property
    def complete(self) -> bool:
        return self._obj is not None and self._obj.eof


class _Brotli:
    def __init__(self, limit: int) -> None:
        import brotli

        self._limit = limit
        self._error = brotli.error
        self._obj = brotli.Decompressor()

    def feed(self, data: bytes) -> bytes:
        try:
            out = self._obj.process(data, output_buffer_limit=self._limit + 1)
        except self._error as exc:
            raise InjectionError(f"corrupt brotli body: {exc}") from None
        if len(out) > self._limit or not self._obj.can_accept_more_data():
            raise _too_large("brotli", self._limit, len(data))
        return out

    @property
    def complete(self) -> bool:
        return self._obj.is_finished()


class _Zstd:
    """zstd, one frame after another (a decompressobj stops at the end of a frame)."""

    # zstandard's decompressobj has no output limit, so input goes in slices small enough that one slice cannot
    # expand far past the limit (a zstd block holds at most 128 KiB, and a slice holds a bounded number of blocks)
    _SLICE = 1024

    def __init__(self, limit: int) -> None:
        import zstandard

        self._limit = limit
        self._error = zstandard.ZstdError
        self._new = zstandard.ZstdDecompressor().decompressobj
        self._obj = self._new()

    def feed(self, data: bytes) -> bytes:
        out, size, fed = [], 0, len(data)
        view = memoryview(data)
        try:
            while view:
                if self._obj.eof:  # the next frame starts
                    self._obj = self._new()
                piece = self._obj.decompress(view[: self._SLICE])
                size += len(piece)
                if size > self._limit:
                    raise _too_large("zstd", self._limit, fed)
                out.append(piece)
                if self._obj.eof and self._obj.unused_data:
                    consumed = min(len(view), self._SLICE) - len(self._obj.unused_data)
                    view = view[consumed:]
                else:
                    view = view[self._SLICE:]
        except self._error as exc:
            raise InjectionError(f"corrupt zstd body: {exc}") from None
        return b"".join(out)

    @property
    def complete(self) -> bool:
        return self._obj.eof


def _decoder(content_encoding: str | None, limit: int):
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return _Identity(limit)
    if encoding in ("gzip", "x-gzip"):
        return _Zlib(limit, gzip=True)
    if encoding == "deflate":
        return _Zlib(limit, gzip=False)
    if encoding == "br":
        return _Brotli(limit)
    if encoding == "zstd":
        return _Zstd(limit)
    raise ValueError(f"unsupported Content-Encoding {content_encoding!r}")


class StreamInjector:
    """A `flow.response.stream` callable: decodes the body (gzip/deflate/br/zstd -> identity) and injects `tag`
    exactly once, even when the marker is split across chunks.

    Until the insertion point is found at most `max_hold` bytes are held back (the top of a page, normally a few
    hundred bytes); past that, or at the end of a short body, the tag goes to the top as in `inject_buffered`.
    After injection every chunk passes straight through. A UTF-16 body passes through untouched.
    Raises InjectionError on a corrupt compressed body or on a chunk that expands past `max_chunk_output` bytes;
    a truncated one shows as `complete` False.
    """

    def __init__(self, tag: bytes, *, content_encoding: str | None = None, max_hold: int = DEFAULT_MAX_HOLD,
                 max_chunk_output: int = DEFAULT_MAX_CHUNK_OUTPUT,
                 on_error: Callable[[InjectionError], None] | None = None):
        if max_hold < 1 or max_chunk_output < 1:
            raise ValueError("max_hold and max_chunk_output must be >= 1")
        self.tag = tag
        self.on_error = on_error
        self.max_hold = max_hold
        self.injected = False
        self._decoder = _decoder(content_encoding, max_chunk_output)
        self._held = bytearray()
        self._resume = 0
        self._passthrough = False

    def __call__(self, chunk: bytes) -> bytes:
        # mitmproxy signals the end with b"", but an empty HTTP/2 DATA frame can look the same: so b"" settles the
        # injection (nothing more is held back) and later chunks, if any, still pass through
        if not chunk:
            return self._scan(b"", final=True)
        try:
            data = self._decoder.feed(bytes(chunk))
        except InjectionError as exc:
            # mitmproxy cannot end a streamed response cleanly from here: raising cuts the connection, which is
            # right (a silently truncated page would look complete); the caller gets to say why first
            if self.on_error is not None:
                self.on_error(exc)
            raise
        return self._scan(data, final=False)

    @property
    def complete(self) -> bool:
        """False while a compressed body has not reached its end marker (check after the last chunk: a truncated
        upstream body)."""
        return self._decoder.complete

    def _scan(self, data: bytes, *, final: bool) -> bytes:
        if self.injected or self._passthrough:
            return data
        self._held += data
        if len(self._held) < 2 and not final:
            return b""  # enough to see a UTF-16 byte order mark
        held = bytes(self._held)
        if held.startswith(_UTF16_BOMS):
            self._passthrough = True
            self._held.clear()
            return held
        offset, self._resume = _find_marker(held, self._resume)
        if offset is None and not (final or len(held) >= self.max_hold):
            return b""
        if offset is None:
            offset = _fallback_offset(held)
        self.injected = True
        self._held.clear()
        return held[:offset] + self.tag + held[offset:]


Headers = Mapping[str, str]


def _header(headers: Headers, name: str) -> str | None:
    getter: Callable | None = getattr(headers, "get", None)
    value = getter(name) if getter else None
    if value is not None:
        return value
    lname = name.lower()
    for key, val in headers.items():
        if key.lower() == lname:
            return val
    return None


def _media_type(content_type: str | None) -> tuple[str, str | None]:
    if not content_type:
        return "", None
    parts = content_type.split(";")
    charset = None
    for param in parts[1:]:
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip('"') or None
    return parts[0].strip().lower(), charset


def charset_of(response_headers: Headers) -> str | None:
    return _media_type(_header(response_headers, "content-type"))[1]


def html_content_type(fields: tuple[tuple[bytes, bytes], ...]) -> bool:
    """A cheap first look at mitmproxy's raw header fields: False when the media type alone rules injection out
    (no Content-Type, or one that is not HTML), which is most proxied responses; True means "ask should_inject".
    Several Content-Type fields are left to should_inject."""
    media = None
    for name, value in fields:
        if name.lower() == b"content-type":
            if media is not None:
                return True
            media = value.split(b";", 1)[0].strip().lower()
    return media is not None and media in _HTML_TYPES_RAW


def should_inject(request_headers: Headers, response_headers: Headers, status: int, *, method: str = "GET") -> bool:
    """True only for a full HTML document the browser will render as a page."""
    if method.upper() == "HEAD" or status < 200 or status in (204, 205, 206, 304) or 300 <= status < 400:
        return False
    media, charset = _media_type(_header(response_headers, "content-type"))
    if media not in _HTML_TYPES or _is_wide_charset(charset):
        return False
    disposition = (_header(response_headers, "content-disposition") or "").split(";")[0].strip().lower()
    if disposition == "attachment":
        return False
    if _header(response_headers, "content-range") is not None:
        return False
    if (_header(response_headers, "content-encoding") or "").strip().lower() not in SUPPORTED_ENCODINGS:
        return False
    # HTML fetched by a script (htmx, fetch, XHR) is a fragment for another page: that page has the sensor already
    dest = _header(request_headers, "sec-fetch-dest")
    if dest is not None and dest.strip().lower() not in _DOCUMENT_DESTINATIONS:
        return False
    if (_header(request_headers, "x-requested-with") or "").lower() == "xmlhttprequest":
        return False
    if _header(request_headers, "hx-request") is not None:
        return False
    return True
