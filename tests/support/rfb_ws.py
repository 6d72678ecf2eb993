"""A small RFB (RFC 6143) client over a WebSocket, as noVNC speaks it (binary frames carrying the byte stream), and
a reader for websockify's `--record` files (what the upstream actually received).

vncdotool speaks raw TCP only; this client does just what the tests need: the 3.8 handshake with security None,
then KeyEvent, PointerEvent, ClientCutText, SetEncodings and FramebufferUpdateRequest. Server messages after the
handshake are drained and counted, not decoded.
"""

from __future__ import annotations

import ast
import asyncio
import struct
from dataclasses import dataclass
from pathlib import Path

from websockets.exceptions import ConnectionClosed


def key_event(keysym: int, down: bool) -> bytes:
    return struct.pack(">BBHI", 4, 1 if down else 0, 0, keysym)


def pointer_event(mask: int, x: int, y: int) -> bytes:
    return struct.pack(">BBHH", 5, mask, x, y)


def client_cut_text(text: bytes) -> bytes:
    return struct.pack(">BxxxI", 6, len(text)) + text


def set_encodings(encodings: list[int]) -> bytes:
    return struct.pack(">BxH", 2, len(encodings)) + b"".join(struct.pack(">i", e) for e in encodings)


def update_request(incremental: bool, x: int, y: int, w: int, h: int) -> bytes:
    return struct.pack(">BBHHHH", 3, 1 if incremental else 0, x, y, w, h)


class RfbWebSocketClient:
    """Drives one RFB session over an open `websockets` connection."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self._buf = bytearray()
        self.server_bytes = 0
        self.width = self.height = 0
        self._drain: asyncio.Task | None = None

    async def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            data = await asyncio.wait_for(self.ws.recv(), 10)
            self._buf += data if isinstance(data, bytes) else data.encode()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def handshake(self) -> None:
        version = await self._read(12)
        if not version.startswith(b"RFB 003."):
            raise AssertionError(f"not an RFB server: {version!r}")
        await self.ws.send(b"RFB 003.008\n")
        (count,) = await self._read(1)
        if count == 0:
            raise AssertionError("server refused the connection")
        types = await self._read(count)
        if 1 not in types:
            raise AssertionError(f"server offers no security None: {list(types)}")
        await self.ws.send(b"\x01")
        (result,) = struct.unpack(">I", await self._read(4))
        if result != 0:
            raise AssertionError("security handshake failed")
        await self.ws.send(b"\x01")  # ClientInit: shared
        init = await self._read(24)
        self.width, self.height = struct.unpack(">HH", init[:4])
        (name_length,) = struct.unpack(">I", init[20:24])
        await self._read(name_length)
        self.server_bytes += len(self._buf)
        self._buf.clear()
        self._drain = asyncio.create_task(self._drain_server())

    async def _drain_server(self) -> None:
        try:
            async for data in self.ws:
                self.server_bytes += len(data)
        except ConnectionClosed:  # the connection ending is the drain's end, whatever the close looked like
            return

    async def send(self, *messages: bytes) -> None:
        for message in messages:
            await self.ws.send(message)

    async def close(self) -> None:
        await self.ws.close()
        if self._drain is not None:
            await asyncio.wait_for(self._drain, 5)


# ---------------------------------------------------------------------------------------------- websockify records


def client_stream_from_record(path: Path) -> bytes:
    """The client-to-server bytes of one websockify `--record` file (lines `'}<ms>}<escaped frame>',`)."""
    out = bytearray()
    for line in path.read_text().splitlines():
        if not line.startswith("'}"):
            continue
        literal = line.rstrip(",")
        frame = ast.literal_eval(literal)  # a Python-compatible quoted string with unicode_escape'd latin-1
        payload = frame.split("}", 2)[2]
        out += payload.encode("latin-1")
    return bytes(out)


@dataclass
class ClientMessages:
    key_down: int = 0
    key_up: int = 0
    pointer: int = 0
    cut_text: int = 0
    cut_bytes: bytes = b""


def count_client_messages(stream: bytes) -> ClientMessages:
    """Counts what this module's client sends, after its 3.8 / security None handshake (12 + 1 + 1 bytes)."""
    counts = ClientMessages()
    pos = 14
    while pos < len(stream):
        kind = stream[pos]
        if kind == 4:
            counts.key_down += stream[pos + 1] != 0
            counts.key_up += stream[pos + 1] == 0
            pos += 8
        elif kind == 5:
            counts.pointer += 1
            pos += 6
        elif kind == 6:
            (length,) = struct.unpack_from(">I", stream, pos + 4)
            counts.cut_text += 1
            counts.cut_bytes += stream[pos + 8 : pos + 8 + length]
            pos += 8 + length
        elif kind == 2:
            (n,) = struct.unpack_from(">H", stream, pos + 2)
            pos += 4 + 4 * n
        elif kind == 3:
            pos += 10
        else:
            raise AssertionError(f"unexpected client message type {kind} at byte {pos}")
    return counts
