"""A TCP relay that adds one-way delay and jitter, for a relayed-operator path without kernel netem.

Each chunk read from one side is held for `delay + jitter` (normal or uniform with the configured standard
deviation, clipped at 0) and then written to the other side; a chunk is never released before the previous chunk of
the same direction, as on a real TCP path, so jitter bunches chunks together (real coalescing at the receiver).
Buffered bytes per direction are bounded: past the bound the relay stops reading, and TCP flow control pushes back on
the sender. Both sockets have Nagle off so the relay adds no batching of its own.

In-process:  `async with DelayRelay(("127.0.0.1", port), delay_ms=55, jitter_ms=5) as relay: relay.port`
Process:     `python -m bench.scenarios.relay --listen 127.0.0.1:0 --target 127.0.0.1:P --delay-ms 55 --jitter-ms 5`
             prints one JSON line `{"host": ..., "port": ...}` once it listens, and runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Literal

JitterDistribution = Literal["normal", "uniform"]
READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class DelayModel:
    """One-way delay per chunk: `delay_ms` plus zero-mean jitter with standard deviation `jitter_ms`, clipped at 0."""

    delay_ms: float
    jitter_ms: float = 0.0
    distribution: JitterDistribution = "normal"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.delay_ms) and self.delay_ms >= 0):
            raise ValueError(f"delay_ms must be a finite number >= 0, got {self.delay_ms!r}")
        if not (math.isfinite(self.jitter_ms) and self.jitter_ms >= 0):
            raise ValueError(f"jitter_ms must be a finite number >= 0, got {self.jitter_ms!r}")
        if self.distribution not in ("normal", "uniform"):
            raise ValueError(f"distribution must be 'normal' or 'uniform', got {self.distribution!r}")

    def sample_ms(self, rng: random.Random) -> float:
        if self.jitter_ms == 0:
            return self.delay_ms
        if self.distribution == "normal":
            noise = rng.gauss(0.0, self.jitter_ms)
        else:  # uniform on [-a, a] has sd a/sqrt(3)
            half_width = self.jitter_ms * math.sqrt(3.0)
            noise = rng.uniform(-half_width, half_width)
        return max(0.0, self.delay_ms + noise)


@dataclass(slots=True)
class DirectionStats:
    chunks: int = 0
    bytes: int = 0
    max_buffered_bytes: int = 0  # highest of any one connection
    held_ms: list[float] = field(default_factory=list)  # time each chunk actually spent in the relay (last 10,000)


@dataclass(slots=True)
class RelayStats:
    connections: int = 0
    upstream: DirectionStats = field(default_factory=DirectionStats)  # client -> target
    downstream: DirectionStats = field(default_factory=DirectionStats)  # target -> client


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class DelayRelay:
    def __init__(
        self,
        target: tuple[str, int],
        *,
        delay_ms: float,
        jitter_ms: float = 0.0,
        distribution: JitterDistribution = "normal",
        seed: int | None = None,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        max_buffer_bytes: int = 1 << 20,
    ) -> None:
        if max_buffer_bytes < 1:
            raise ValueError(f"max_buffer_bytes must be >= 1, got {max_buffer_bytes}")
        self.target = target
        self.model = DelayModel(delay_ms, jitter_ms, distribution)
        self.listen = listen
        self.max_buffer_bytes = max_buffer_bytes
        self.stats = RelayStats()
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("relay not started")
        return self._server.sockets[0].getsockname()[1]

    @property
    def host(self) -> str:
        return self.listen[0]

    async def start(self) -> DelayRelay:
        self._server = await asyncio.start_server(self._on_client, self.listen[0], self.listen[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> DelayRelay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def _on_client(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                target_reader, target_writer = await asyncio.open_connection(*self.target)
            except OSError:
                client_writer.close()
                return
            self.stats.connections += 1
            for w in (client_writer, target_writer):
                sock = w.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                # a TaskGroup: one side failing (reset) cancels the other instead of leaving it orphaned
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._direction(client_reader, target_writer, self.stats.upstream))
                    group.create_task(self._direction(target_reader, client_writer, self.stats.downstream))
            except* (ConnectionError, OSError):
                pass
            finally:
                for w in (client_writer, target_writer):
                    w.close()
                for w in (client_writer, target_writer):
                    with contextlib.suppress(ConnectionError, OSError):
                        await w.wait_closed()
        finally:
            self._tasks.discard(task)

    async def _direction(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: DirectionStats
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, float, bytes]] = asyncio.Queue()
        room = asyncio.Event()
        room.set()
        buffered = 0  # this connection, this direction: the bound applies here (overshoot < one READ_SIZE read)

        async def read_side() -> None:
            nonlocal buffered
            last_release = 0.0
            while True:
                await room.wait()
                data = await reader.read(READ_SIZE)
                arrived = loop.time()
                # in order: never before the previous chunk, whatever the jitter drew
                release = max(arrived + self.model.sample_ms(self._rng) / 1000.0, last_release)
                last_release = release
                buffered += len(data)
                stats.max_buffered_bytes = max(stats.max_buffered_bytes, buffered)
                if buffered >= self.max_buffer_bytes:
                    room.clear()
                queue.put_nowait((release, arrived, data))
                if not data:  # EOF travels with the same delay, after the data before it
                    return

        async def write_side() -> None:
            nonlocal buffered
            while True:
                release, arrived, data = await queue.get()
                wait = release - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
                stats.chunks += 1
                stats.bytes += len(data)
                buffered -= len(data)
                if len(stats.held_ms) < 10_000:
                    stats.held_ms.append((loop.time() - arrived) * 1000.0)
                if buffered < self.max_buffer_bytes:
                    room.set()

        async with asyncio.TaskGroup() as group:
            group.create_task(read_side())
            group.create_task(write_side())


async def _main(args: argparse.Namespace) -> None:
    relay = DelayRelay(
        parse_hostport(args.target),
        delay_ms=args.delay_ms,
        jitter_ms=args.jitter_ms,
        distribution=args.jitter_distribution,
        seed=args.seed,
        listen=parse_hostport(args.listen),
        max_buffer_bytes=args.max_buffer_bytes,
    )
    await relay.start()
    print(json.dumps({"host": relay.host, "port": relay.port, "started": time.time()}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await relay.close()
    upstream, downstream = relay.stats.upstream, relay.stats.downstream
    print(
        json.dumps(
            {
                "connections": relay.stats.connections,
                "chunks": [upstream.chunks, downstream.chunks],
                "bytes": [upstream.bytes, downstream.bytes],
                "max_buffered_bytes": [upstream.max_buffered_bytes, downstream.max_buffered_bytes],
            }
        ),
        file=sys.stderr,
        flush=True,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.scenarios.relay", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (port 0: any free port)")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay per direction (RTT adds 2x)")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="standard deviation of the per-chunk jitter")
    parser.add_argument("--jitter-distribution", choices=["normal", "uniform"], default="normal")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-buffer-bytes", type=int, default=1 << 20, help="per direction, per connection")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        parse_hostport(args.listen), parse_hostport(args.target)
        DelayModel(args.delay_ms, args.jitter_ms, args.jitter_distribution)
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
