"""Large bodies stream through the gateway with bounded memory: 1 GB up, 1 GB down, and a long WebSocket.

The gateway process's resident memory is sampled during each transfer (tests/support/processes.RssSampler); its
growth must stay far below the amount of data that went through.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets

import httpx
import pytest
import websockets
import websockets.exceptions

from gateway.demo.streams import pattern_chunks
from tests.support.processes import (RssSampler, free_port, gateway_config, login, make_users, run_gateway,
                                     run_upstream)

pytestmark = pytest.mark.slow

GB = 1024**3
SIZE = int(os.environ.get("ZTGATE_STREAM_TEST_BYTES", GB))
MAX_GROWTH_MIB = 200


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    users = make_users(tmp / "users.yaml", [{"username": "s1"}])
    port = free_port()
    with run_upstream(tmp, jwks_port=port) as upstream:
        cfg = gateway_config(port=port, upstream=upstream, tmp=tmp, users_file=tmp / "users.yaml",
                             admin_token=secrets.token_urlsafe(24))
        with run_gateway(tmp, cfg) as gw:
            with httpx.Client(base_url=gw.url) as c:
                assert login(c, users["s1"]).status_code == 303
                token = c.cookies.get("ztgate_session")
            yield gw, token


def _report(what: str, sampler: RssSampler, size: int) -> None:
    print(f"\n{what}: {size / 2**20:.0f} MiB through the gateway; gateway RSS {sampler.baseline / 1024:.0f} -> "
          f"peak {sampler.peak / 1024:.0f} MiB (growth {sampler.growth_kib / 1024:.0f} MiB)")


def test_upload_of_1_gb_streams(env):
    gw, token = env
    sent = hashlib.sha256()

    def body():
        for chunk in pattern_chunks(SIZE):
            sent.update(chunk)
            yield chunk

    with RssSampler(gw.proc) as sampler, httpx.Client(base_url=gw.url, timeout=120,
                                                cookies={"ztgate_session": token}) as c:
        r = c.post("/upload", content=body(),
                   headers={"Accept": "application/json", "Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert r.json() == {"bytes": SIZE, "sha256": sent.hexdigest()}
    _report("upload", sampler, SIZE)
    assert sampler.growth_kib < MAX_GROWTH_MIB * 1024


def test_download_of_1_gb_streams(env):
    gw, token = env
    got = hashlib.sha256()
    expected = hashlib.sha256()
    count = 0
    with RssSampler(gw.proc) as sampler, httpx.Client(base_url=gw.url, timeout=120,
                                                cookies={"ztgate_session": token}) as c:
        with c.stream("GET", f"/download?size={SIZE}",
                      headers={"Accept": "application/octet-stream"}) as r:
            assert r.status_code == 200
            for chunk in r.iter_raw():
                got.update(chunk)
                count += len(chunk)
    for chunk in pattern_chunks(SIZE):
        expected.update(chunk)
    assert count == SIZE and got.hexdigest() == expected.hexdigest()
    _report("download", sampler, SIZE)
    assert sampler.growth_kib < MAX_GROWTH_MIB * 1024


def test_websocket_history_is_trimmed(env):
    gw, token = env
    message = os.urandom(64 * 1024)
    count = 800  # 50 MiB through one socket: without trimming RSS grows by about that much

    async def echo_many() -> None:
        async with websockets.connect(f"ws://127.0.0.1:{gw.port}/ws/echo", max_size=2**20,
                                      additional_headers={"Cookie": f"ztgate_session={token}"}) as ws:
            for _ in range(count):
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), 10) == message

    with RssSampler(gw.proc) as sampler:
        asyncio.run(echo_many())
    _report(f"websocket {count} x 64 KiB echoed", sampler, 2 * count * len(message))
    # kept history would be 2 x 800 x 64 KiB = 100 MiB; trimmed, only a few messages are alive at any time
    assert sampler.growth_kib < 64 * 1024


def test_large_upload_without_a_session_never_reaches_the_upstream(env):
    gw, _ = env
    # the decision is made at the request headers, before mitmproxy streams any body byte to a server
    big = b"x" * (5 * 2**20)  # above stream_large_bodies (1 MiB): mitmproxy would stream it
    try:
        r = httpx.post(f"{gw.url}/upload", content=big, headers={"Accept": "application/json"}, timeout=30)
        assert r.status_code == 401, r.text  # never the upstream's {"bytes": ...}
    except httpx.TransportError:
        pass  # mitmproxy cannot answer a request whose body it streams: the connection is cut instead
    small = httpx.post(f"{gw.url}/upload", content=iter([b"y" * 1000]), headers={"Accept": "application/json"})
    assert small.status_code == 401  # a chunked body below the threshold gets the ordinary answer


def test_a_clients_websocket_message_is_bounded_and_large_ones_still_pass(env):
    """mitmproxy gathers a message before ztgate sees it, with bytes += per TCP read: quadratic CPU in one large
    frame (64 MiB took 21 s of the event loop in the resource audit) and no bound at all (unfinished fragments held
    300 MiB per connection). Now gathered in place and a client's message capped at MAX_CLIENT_MESSAGE: a message
    that never ends is cut with 1009 once it passes the cap (before, the gateway kept gathering it for as long as
    the client sent), and an ordinary large message (512 KiB, from many reads) still goes through whole."""
    from gateway.proxy.websocket_limits import MAX_CLIENT_MESSAGE

    gw, token = env
    big = os.urandom(512 * 1024)
    headers = {"Cookie": f"ztgate_session={token}"}

    async def never_ending():
        piece = os.urandom(2**20)
        for _ in range(MAX_CLIENT_MESSAGE // len(piece) + 2):
            yield piece
        await asyncio.Event().wait()  # the message's last frame never comes

    async def exchange() -> None:
        async with websockets.connect(f"ws://127.0.0.1:{gw.port}/ws/echo", max_size=2**22,
                                      additional_headers=headers) as ws:
            await ws.send(big)
            assert await asyncio.wait_for(ws.recv(), 60) == big
        ws = await websockets.connect(f"ws://127.0.0.1:{gw.port}/ws/echo", additional_headers=headers)
        sending = asyncio.create_task(ws.send(never_ending()))
        try:
            await asyncio.wait_for(ws.wait_closed(), 60)
        finally:
            sending.cancel()
        assert ws.close_code == 1009

    asyncio.run(exchange())
