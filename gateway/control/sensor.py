"""Sensor ingest: the WebSocket each page opens, the beacon fallback, and the script itself."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..sensor import protocol, tokens
from ..sensor.pings import PingTracker
from .common import current_session, gateway, problem

log = logging.getLogger("ztgate.sensor")

_SCRIPT = Path(__file__).resolve().parent.parent / "sensor" / "sensor.min.js"
_PING_EVERY = 2.0
_MAX_BEACON = 64 * 1024


async def sensor_script(request: Request) -> Response:
    body = _SCRIPT.read_bytes()
    return Response(body, media_type="application/javascript",
                    headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})


async def sensor_socket(ws: WebSocket) -> None:
    gw = gateway(ws)
    record, _ = await current_session(ws)
    if record is None or record.terminated:
        await ws.close(code=4401)
        return
    token = ws.query_params.get("token", "")
    try:
        page = gw.injector.page_for(token, record.sid)
    except tokens.SensorTokenError as err:
        await gw.injector.token_rejected(record.sid, err.reason)
        log.warning("sensor token refused for session %s: %s", record.sid, err.reason)
        await ws.close(code=4403)
        return
    await ws.accept()
    page_id = page.page_id
    pings = PingTracker()
    time_origin: list[float | None] = [None]

    async def pinger() -> None:
        while True:
            await asyncio.sleep(_PING_EVERY)
            await ws.send_text(pings.ping(time.time() * 1000.0))

    ping_task = asyncio.create_task(pinger())
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("text") if message.get("text") is not None else message.get("bytes", b"")
            try:
                decoded = await gw.injector.message(record.sid, page_id, raw)
            except protocol.SensorProtocolError as err:
                gw.telemetry.count("ztgate_sensor_rejected_total", reason=err.reason)
                log.warning("sensor message refused for session %s: %s", record.sid, err.reason)
                await ws.close(code=1008)
                break
            if decoded.time_origin is not None:
                time_origin[0] = decoded.time_origin
            for pong in decoded.pongs:
                probe = pings.pong(pong, time.time() * 1000.0, time_origin=time_origin[0])
                if probe is not None:
                    gw.monitor.submit(record.sid, probe)
    except WebSocketDisconnect:
        pass
    finally:
        ping_task.cancel()


async def sensor_beacon(request: Request) -> Response:
    gw = gateway(request)
    record, _ = await current_session(request)
    if record is None or record.terminated:
        return problem(401, "unauthenticated")
    body = await _bounded_body(request, _MAX_BEACON)
    if body is None:
        return problem(413, "too_large", f"sensor messages are at most {_MAX_BEACON} bytes")
    try:
        page = gw.injector.page_for(request.query_params.get("token", ""), record.sid)
    except tokens.SensorTokenError as err:
        await gw.injector.token_rejected(record.sid, err.reason)
        return problem(403, "bad_token", err.reason)
    page_id = page.page_id
    try:
        await gw.injector.message(record.sid, page_id, body)
    except protocol.SensorProtocolError as err:
        return problem(400, "bad_message", err.reason)
    return Response(status_code=204)


async def _bounded_body(request: Request, limit: int) -> bytes | None:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
