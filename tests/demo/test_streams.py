"""Uploads, downloads and big HTML stream through the demo app without being held in memory."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from gateway.demo.streams import BLOCK_SIZE, pattern_sha256

REPO = Path(__file__).resolve().parents[2]


async def test_download_streams_deterministic_bytes(demo, auth):
    size = 3 * BLOCK_SIZE + 123
    async with httpx.AsyncClient(base_url=demo.url) as client:
        response = await client.get("/download", params={"size": size}, headers=auth())
    assert response.headers["content-length"] == str(size)
    assert len(response.content) == size
    assert response.content[:32] == hashlib.sha256(b"ztgate-demo-0").digest()
    assert hashlib.sha256(response.content).hexdigest() == pattern_sha256(size)


async def test_download_bad_size_is_400(demo, auth):
    async with httpx.AsyncClient(base_url=demo.url) as client:
        negative = await client.get("/download", params={"size": -1}, headers=auth())
        text = await client.get("/download", params={"size": "1GB"}, headers=auth())
    assert negative.status_code == 400 and "between 0 and" in negative.json()["error"]
    assert text.status_code == 400 and "must be an integer" in text.json()["error"]


async def test_upload_counts_and_hashes(demo, auth):
    body = os.urandom(2 * BLOCK_SIZE + 7)

    async def chunks():
        for i in range(0, len(body), 10_000):
            yield body[i : i + 10_000]

    async with httpx.AsyncClient(base_url=demo.url) as client:
        response = await client.post("/upload", content=chunks(), headers=auth())
        empty = await client.post("/upload", content=b"", headers=auth())
    assert response.json() == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert empty.json() == {"bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()}


@pytest.mark.parametrize("kb", [1, 300])
async def test_big_html_is_streamed_chunked_with_exact_size(demo, auth, kb):
    async with httpx.AsyncClient(base_url=demo.url) as client:
        async with client.stream("GET", "/big.html", params={"kb": kb}, headers=auth()) as response:
            assert "content-length" not in response.headers  # chunked: the gateway must inject while streaming
            assert response.headers["content-type"].startswith("text/html")
            chunks = [chunk async for chunk in response.aiter_raw()]
    page = b"".join(chunks)
    # Exact size, unless the page's fixed head and tail alone are larger than asked for.
    assert len(page) == kb * 1024 if kb >= 4 else len(page) >= kb * 1024
    assert page.startswith(b"<!doctype html>") and page.rstrip().endswith(b"</html>")
    assert b"big-ok" in page
    if kb == 300:
        assert len(chunks) > 4


SERVER_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from gateway.demo import serve

    async def main():
        server = await serve("127.0.0.1", 0, jwks_url=None, jwks=json.loads(sys.argv[1]))
        print(server.port, flush=True)
        await server.wait()

    asyncio.run(main())
    """
)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.slow
async def test_large_transfers_keep_server_memory_bounded(gw_keys):
    """Runs the app in its own process so its peak RSS (VmHWM) is its own; 256 MiB each way."""
    size = 256 * 1024 * 1024
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT, json.dumps(gw_keys.jwks())], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(process.stdout.readline())
        headers = {"X-Ztgate-Assertion": gw_keys.mint()}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            baseline = peak_rss_mb(process.pid)
            received = hashlib.sha256()
            count = 0
            async with client.stream("GET", "/download", params={"size": size}, headers=headers) as response:
                async for chunk in response.aiter_bytes():
                    received.update(chunk)
                    count += len(chunk)
            assert count == size and received.hexdigest() == pattern_sha256(size)

            async def body():
                block = os.urandom(BLOCK_SIZE)
                for _ in range(size // BLOCK_SIZE):
                    yield block

            uploaded = (await client.post("/upload", content=body(), headers=headers)).json()
            assert uploaded["bytes"] == size
            growth = peak_rss_mb(process.pid) - baseline
    finally:
        process.terminate()
        process.wait(timeout=10)
    print(f"demo upstream peak RSS growth over 2 x 256 MiB: {growth:.1f} MiB (baseline {baseline:.1f} MiB)")
    # Buffering either body would add >= 256 MiB; streaming stays within a few chunks plus allocator slack.
    assert growth < 64, f"peak RSS grew by {growth:.0f} MiB while streaming"
