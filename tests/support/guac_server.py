"""A stand-in for guacd + guacamole-client's WebSocket tunnel (there is no guacd on these machines).

Run: python guac_server.py PORT

WebSocket on any path, subprotocol "guacamole", text frames of Guacamole instructions. Like the real tunnel it
first sends the tunnel UUID (`0.,36.<uuid>;`), then `ready` and `size`, then one frame of drawing instructions
closed by `sync,<timestamp>` every 1/fps seconds (query `fps`, default 20; for volume, `png=N&pngs=K` adds K image
instructions of N base64 characters to each frame). It answers the tunnel's internal ping with the same instruction,
acknowledges file/put streams and their blobs the way guacd does (`ack,<stream>,OK,0`), and counts what it
receives per connection. It keeps counts only: no keysym, clipboard text or file content is stored.

GET /stats?label=L returns the counts of the connection opened with `?label=L` (404 until it exists);
any other GET answers 200 with a short text (so an HTTP request can go through the gateway's route first).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import Counter

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

CONNECTIONS: dict[str, Counter] = {}  # label -> counts (test server: one process per test module)


def element(value: str) -> str:
    return f"{len(value)}.{value}"


def instruction(*elements: str) -> str:
    return ",".join(element(e) for e in elements) + ";"


def split_instructions(buf: str) -> tuple[list[list[str]], str]:
    """Complete instructions in `buf` and the unfinished rest. Raises ValueError when malformed."""
    out: list[list[str]] = []
    pos = 0
    while pos < len(buf):
        elements: list[str] = []
        i = pos
        while True:
            dot = buf.find(".", i)
            if dot < 0:
                return out, buf[pos:]
            length = int(buf[i:dot])
            end = dot + 1 + length
            if end >= len(buf):
                return out, buf[pos:]
            elements.append(buf[dot + 1 : end])
            if buf[end] == ";":
                out.append(elements)
                pos = end + 1
                break
            if buf[end] != ",":
                raise ValueError("malformed instruction")
            i = end + 1
    return out, ""


def frame(seq: int, png_chars: int, pngs: int = 1) -> str:
    x = (seq * 7) % 1000
    parts = [instruction("rect", "0", str(x), "10", "16", "16"),
             instruction("cfill", "14", "0", str(seq % 256), "128", "64", "255")]
    for _ in range(pngs if png_chars else 0):  # guacd keeps each instruction under 8192 code points
        parts.append(instruction("png", "14", "0", str(x), "10", "A" * png_chars))
    parts.append(instruction("sync", str(int(time.time() * 1000)), "1"))
    return "".join(parts)


async def tunnel(ws: WebSocket) -> None:
    label = ws.query_params.get("label") or uuid.uuid4().hex
    fps = float(ws.query_params.get("fps", "20"))
    png_chars = int(ws.query_params.get("png", "0"))
    pngs = int(ws.query_params.get("pngs", "1"))
    counts = CONNECTIONS.setdefault(label, Counter())
    await ws.accept(subprotocol="guacamole" if "guacamole" in ws.scope.get("subprotocols", []) else None)
    counts["connected"] += 1
    tunnel_id = str(uuid.uuid4())
    await ws.send_text(instruction("", tunnel_id))
    await ws.send_text(instruction("ready", "$" + tunnel_id) + instruction("size", "0", "1024", "768"))

    async def frames() -> None:
        seq = 0
        while True:
            seq += 1
            await ws.send_text(frame(seq, png_chars, pngs))
            counts["frames_sent"] += 1
            await asyncio.sleep(1.0 / fps)

    sender = asyncio.create_task(frames())
    buf = ""
    upload_streams: set[str] = set()
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                counts["binary_frames"] += 1
                continue
            counts["messages"] += 1
            counts["chars"] += len(text)
            instructions, buf = split_instructions(buf + text)
            for e in instructions:
                await handle(ws, e, counts, upload_streams)
    except (WebSocketDisconnect, RuntimeError):
        return
    except ValueError:
        counts["malformed"] += 1
        await ws.close(1002)
    finally:
        sender.cancel()
        counts["closed"] += 1


async def handle(ws: WebSocket, e: list[str], counts: Counter, upload_streams: set[str]) -> None:
    op = e[0]
    if op == "key":
        counts["key_down" if e[2] == "1" else "key_up"] += 1
    elif op == "mouse":
        counts["mouse"] += 1
    elif op == "sync":
        counts["sync_echo"] += 1
    elif op == "" and len(e) >= 3 and e[1] == "ping":
        counts["ping"] += 1
        await ws.send_text(instruction(*e))
    elif op in ("clipboard", "file", "put"):
        counts[op] += 1
        if op != "clipboard":  # guacd acknowledges uploads (and each of their blobs), not clipboard streams
            stream = e[1] if op == "file" else e[2]
            upload_streams.add(stream)
            await ws.send_text(instruction("ack", stream, "OK", "0"))
    elif op == "blob":
        counts["blob"] += 1
        if e[1] in upload_streams:
            await ws.send_text(instruction("ack", e[1], "OK", "0"))
    elif op in ("end", "ack", "size", "disconnect"):
        counts[op] += 1
        if op == "end":
            upload_streams.discard(e[1])
        if op == "disconnect":
            await ws.close(1000)
    else:
        counts["other"] += 1


async def stats(request: Request) -> JSONResponse:
    counts = CONNECTIONS.get(request.query_params.get("label", ""))
    if counts is None:
        return JSONResponse({"error": "no such connection"}, status_code=404)
    return JSONResponse(dict(counts))


async def page(request: Request) -> PlainTextResponse:
    return PlainTextResponse("guacamole test server\n")


app = Starlette(routes=[Route("/stats", stats), WebSocketRoute("/{path:path}", tunnel), Route("/{path:path}", page)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
                ws_max_size=16 * 1024 * 1024)
