"""The delay relay: real sockets on loopback, real timing (reported, with loose sanity checks only)."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.scenarios.relay import DelayModel, DelayRelay, parse_hostport

ROOT = Path(__file__).resolve().parents[3]


async def _echo_server() -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def _ping_rtts(port: int, n: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rtts = []
    for i in range(n):
        t0 = time.perf_counter()
        writer.write(b"%d\n" % i)
        await writer.drain()
        assert await reader.readline() == b"%d\n" % i
        rtts.append((time.perf_counter() - t0) * 1000)
    writer.close()
    return rtts


def test_delay_model_validates_and_clips() -> None:
    import random

    with pytest.raises(ValueError, match="delay_ms"):
        DelayModel(-1)
    with pytest.raises(ValueError, match="distribution"):
        DelayModel(10, 1, "pareto")  # type: ignore[arg-type]
    rng = random.Random(1)
    for dist in ("normal", "uniform"):
        draws = [DelayModel(2, 10, dist).sample_ms(rng) for _ in range(2000)]  # type: ignore[arg-type]
        assert min(draws) >= 0.0
    uniform = [DelayModel(50, 5, "uniform").sample_ms(rng) for _ in range(4000)]
    print(f"\nuniform(50, sd 5): mean {statistics.mean(uniform):.2f} sd {statistics.stdev(uniform):.2f}")
    half_width = 5 * 3**0.5  # uniform with sd 5
    assert 50 - half_width - 1e-9 <= min(uniform) and max(uniform) <= 50 + half_width + 1e-9


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_hostport("[::1]:0") == ("::1", 0)
    for bad in ("127.0.0.1", ":80", "h:99999", "h:x"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_hostport(bad)


async def test_added_rtt_is_measured_and_at_least_the_configured_delay() -> None:
    echo = await _echo_server()
    echo_port = echo.sockets[0].getsockname()[1]
    direct = statistics.median(await _ping_rtts(echo_port, 20))
    report = {}
    for delay, jitter in ((0, 0), (15, 0), (15, 3)):
        async with DelayRelay(("127.0.0.1", echo_port), delay_ms=delay, jitter_ms=jitter, seed=7) as relay:
            rtts = await _ping_rtts(relay.port, 25)
        report[(delay, jitter)] = (statistics.median(rtts) - direct, statistics.stdev(rtts))
        assert statistics.median(rtts) >= 2 * delay  # loose sanity: it never comes back early
    echo.close()
    await echo.wait_closed()
    print(f"\ndirect median RTT {direct:.2f} ms")
    for (delay, jitter), (added, sd) in report.items():
        print(f"relay delay {delay} ms/dir jitter sd {jitter}: added RTT {added:.2f} ms (config {2 * delay}), sd {sd:.2f}")


async def test_order_preserved_under_large_jitter() -> None:
    echo = await _echo_server()
    echo_port = echo.sockets[0].getsockname()[1]
    async with DelayRelay(("127.0.0.1", echo_port), delay_ms=5, jitter_ms=20, seed=3) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        sent = b""
        for i in range(300):
            line = b"%05d\n" % i
            writer.write(line)
            sent += line
            await writer.drain()
            if i % 10 == 0:
                await asyncio.sleep(0.002)  # spread writes so chunks get different jitter draws
        writer.write_eof()
        received = await asyncio.wait_for(reader.read(), timeout=20)
        writer.close()
        chunks = relay.stats.upstream.chunks
    echo.close()
    assert received == sent
    print(f"\n300 lines went through as {chunks} upstream chunks")


async def test_buffering_is_bounded_when_the_target_does_not_read() -> None:
    stalled = asyncio.Event()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stalled.wait()  # never reads: the kernel buffers fill, then the relay's, then the client blocks
        writer.close()

    target = await asyncio.start_server(sink, "127.0.0.1", 0)
    cap = 256 * 1024
    async with DelayRelay(target.sockets[0].getsockname(), delay_ms=1, max_buffer_bytes=cap) as relay:
        _, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        block = b"x" * 65536
        written = 0
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(3):
                while True:
                    writer.write(block)
                    await writer.drain()
                    written += len(block)
        held = relay.stats.upstream.max_buffered_bytes
        writer.transport.abort()
        stalled.set()
    target.close()
    print(f"\nclient got {written / 1e6:.1f} MB into the kernel+relay before blocking; relay held at most {held} B")
    assert held <= cap + 65536


@pytest.mark.slow
def test_cli_prints_port_and_relays() -> None:
    async def run() -> None:
        echo = await _echo_server()
        echo_port = echo.sockets[0].getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.scenarios.relay", "--target", f"127.0.0.1:{echo_port}",
            "--delay-ms", "10", "--jitter-ms", "1", "--seed", "1",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            hello = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
            rtts = await _ping_rtts(hello["port"], 10)
            print(f"\nCLI relay 10 ms/dir: median RTT {statistics.median(rtts):.2f} ms")
            assert statistics.median(rtts) >= 20
        finally:
            proc.terminate()
            _, err = await proc.communicate()
            echo.close()
        assert proc.returncode == 0, err
        assert json.loads(err.decode().strip().splitlines()[-1])["connections"] == 1

    asyncio.run(run())


def test_cli_rejects_bad_arguments() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.scenarios.relay", "--target", "nohost", "--delay-ms", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2 and "HOST:PORT" in result.stderr
