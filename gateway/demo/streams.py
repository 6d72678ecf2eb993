"""Bodies the demo app streams: deterministic download bytes and a large HTML page, produced chunk by chunk so
memory stays bounded whatever size a test asks for."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from functools import cache

from gateway.demo.pages import FAVICON

BLOCK_SIZE = 64 * 1024


@cache
def pattern_block() -> bytes:
    """64 KiB of fixed pseudo-random bytes (SHA-256 in counter mode): incompressible, the same on every run."""
    return b"".join(hashlib.sha256(b"ztgate-demo-%d" % i).digest() for i in range(BLOCK_SIZE // 32))


def pattern_chunks(size: int) -> Iterator[bytes]:
    """`size` bytes of the repeating pattern, in BLOCK_SIZE chunks (the last one shorter)."""
    block = pattern_block()
    full, rest = divmod(size, BLOCK_SIZE)
    for _ in range(full):
        yield block
    if rest:
        yield block[:rest]


def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in pattern_chunks(size):
        digest.update(chunk)
    return digest.hexdigest()


async def download_body(size: int) -> AsyncIterator[bytes]:
    for chunk in pattern_chunks(size):
        yield chunk
        # Let other tasks (the gateway, when it shares this loop under `ztgate demo`) run between chunks.
        await asyncio.sleep(0)


BIG_ROW_BYTES = 64


def big_html_head(nonce: str, kb: int) -> str:
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>Big report ({kb} KB) · Acme Intranet</title>"
        f"<link rel=\"stylesheet\" href=\"/static/app.css\">{FAVICON}</head>\n"
        f"<body><main><h1>Big report</h1><p id=\"big-status\">loading</p>"
        f"<p>This page is {kb} KB of HTML streamed in chunks.</p>\n"
    )


def big_html_tail(nonce: str) -> str:
    return (
        f"<script nonce=\"{nonce}\">document.getElementById('big-status').textContent = 'big-ok';</script>\n"
        "</main></body></html>\n"
    )


def big_html_row(index: int) -> str:
    row = f"<p class=\"row\">Row {index:08d} lorem ipsum dolor sit amet"
    return row + " " * (BIG_ROW_BYTES - len(row) - 5) + "</p>\n"


async def big_html_body(kb: int, nonce: str, *, chunk_bytes: int = 16 * 1024) -> AsyncIterator[bytes]:
    """An HTML page of exactly max(kb KiB, head + tail) bytes, yielded in chunks of about `chunk_bytes`."""
    head = big_html_head(nonce, kb).encode()
    tail = big_html_tail(nonce).encode()
    yield head
    remaining = kb * 1024 - len(head) - len(tail)
    buffer: list[str] = []
    buffered = 0
    index = 0
    while remaining >= BIG_ROW_BYTES:
        buffer.append(big_html_row(index))
        index += 1
        buffered += BIG_ROW_BYTES
        remaining -= BIG_ROW_BYTES
        if buffered >= chunk_bytes:
            yield "".join(buffer).encode()
            buffer.clear()
            buffered = 0
            await asyncio.sleep(0)
    if remaining > 0:
        # Pad to the exact size with whitespace, which HTML ignores.
        buffer.append(" " * (remaining - 1) + "\n" if remaining > 1 else "\n")
    if buffer:
        yield "".join(buffer).encode()
    yield tail
