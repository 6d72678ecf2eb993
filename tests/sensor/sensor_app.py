"""A small real web app for the browser tests: pages with the sensor injected exactly as the gateway will inject it
(tokens.py, inject.py), sensor.min.js, and the sensor endpoints decoding with protocol.py.
Not a mock of the gateway: the lead's control plane replaces it; this one records everything it receives."""

from __future__ import annotations

import gzip
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.sensor import inject, protocol, tokens
from gateway.sensor.pings import PingTracker

SECRET = b"test-secret-for-the-sensor-tests!"
SENSOR_MIN_JS = Path(inject.__file__).resolve().parent / "sensor.min.js"
APP_NONCE = "appnonce123"
STRICT_CSP = f"default-src 'none'; script-src 'nonce-{APP_NONCE}' 'strict-dynamic'; style-src 'self'"

PAGE1 = """<!doctype html><html><head><title>one</title></head><body>
<input id="field" type="text"> <input id="pw" type="password">
<a id="next" href="/page2">next</a> <button id="btn">button</button>
<div style="height:2000px"></div></body></html>"""
PAGE2 = """<!DOCTYPE html><html lang="en"><HEAD><title>two</title></HEAD><body>
<input id="field" type="text"><p>""" + "padding " * 2000 + "</p></body></html>"
CSP_PAGE = f"""<!doctype html><html><head><title>csp</title>
<script nonce="{APP_NONCE}">document.title = "app-ran";</script></head><body><input id="field"></body></html>"""
SPA_PAGE = """<!doctype html><html><head><title>spa</title></head><body>
<input id="field"><button id="go">go</button><button id="alert">alert</button><div id="view"></div>
<script>
document.getElementById("go").addEventListener("click", function () {
  history.pushState({}, "", "/spa/next");
  var input = document.createElement("input");
  input.id = "second";
  document.getElementById("view").appendChild(input);
});
document.getElementById("alert").addEventListener("click", function () { alert("hello"); });
</script></body></html>"""

# Secret fields the sensor cannot see by e.target alone: inside an open shadow root (e.target is the host), inside a
# closed one (even the composed path stops at the host), and a password shown as text by a "show password" toggle.
SECRETS_PAGE = """<!doctype html><html><head><title>secrets</title></head><body>
<open-field id="open-pw"></open-field> <open-field id="open-text" data-type="text"></open-field>
<closed-field id="closed-pw"></closed-field>
<input id="shown" type="text" autocomplete="current-password">
<script>
customElements.define("open-field", class extends HTMLElement {
  connectedCallback() {
    const input = document.createElement("input");
    input.type = this.dataset.type || "password";
    this.attachShadow({mode: "open"}).appendChild(input);
  }
});
customElements.define("closed-field", class extends HTMLElement {
  connectedCallback() {
    const input = document.createElement("input");
    input.type = "password";
    this.attachShadow({mode: "closed"}).appendChild(input);
    this.inner = input;
  }
});
</script></body></html>"""


@dataclass
class Received:
    channel: str  # "ws" | "beacon"
    sid: str
    page_id: str
    raw: str
    decoded: protocol.Decoded


@dataclass
class Recorder:
    lock: threading.Lock = field(default_factory=threading.Lock)
    messages: list[Received] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    connections: dict[str, int] = field(default_factory=dict)  # page_id -> WebSocket connections
    pages: dict[str, str] = field(default_factory=dict)  # token -> path of the page it was served with

    def add(self, item: Received) -> None:
        with self.lock:
            self.messages.append(item)

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.messages)


def build_app(recorder: Recorder) -> Starlette:
    def page(request: Request, body: str, *, csp: str | None = None, apply_csp: bool = True, stream: bool = False):
        sid = request.cookies.get("sid") or secrets.token_urlsafe(12)
        token = tokens.issue(SECRET, sid, time.time())
        page_id = tokens.verify(SECRET, token, sid, time.time()).page_id
        recorder.pages[page_id] = request.url.path
        nonce = inject.new_nonce()
        tag = inject.sensor_tag(token, nonce)
        headers = {"Cache-Control": "no-store"}
        if csp:
            headers["Content-Security-Policy"] = inject.csp_with_nonce(csp, nonce) if apply_csp else csp
        if stream:
            # the streaming path of the addon: a gzip body, decoded and injected chunk by chunk
            compressed = gzip.compress(body.encode())
            injector = inject.StreamInjector(tag, content_encoding="gzip")

            def chunks():
                for i in range(0, len(compressed), 97):
                    out = injector(compressed[i : i + 97])
                    if out:
                        yield out
                tail = injector(b"")
                if tail:
                    yield tail

            response = StreamingResponse(chunks(), media_type="text/html; charset=utf-8", headers=headers)
        else:
            response = HTMLResponse(inject.inject_buffered(body.encode(), "utf-8", tag), headers=headers)
        response.set_cookie("sid", sid, path="/", samesite="lax", httponly=True)
        return response

    async def page1(request):
        return page(request, PAGE1)

    async def page2(request):
        return page(request, PAGE2, stream=True)

    async def csp(request):
        return page(request, CSP_PAGE, csp=STRICT_CSP)

    async def csp_unmodified(request):
        return page(request, CSP_PAGE, csp=STRICT_CSP, apply_csp=False)

    async def reconnect(request):
        return page(request, PAGE1)

    async def spa(request):
        return page(request, SPA_PAGE)

    async def secrets_page(request):
        return page(request, SECRETS_PAGE)

    async def sensor_js(request):
        return Response(SENSOR_MIN_JS.read_bytes(), media_type="text/javascript")

    def check(token: str | None, sid: str | None) -> tokens.PageToken:
        return tokens.verify(SECRET, token or "", sid or "", time.time())

    async def beacon(request: Request):
        try:
            page_token = check(request.query_params.get("token"), request.cookies.get("sid"))
            raw = (await request.body()).decode()
            decoded = protocol.decode(raw, session_id=request.cookies["sid"], page=page_token.page_id,
                                      now_ms=time.time() * 1000)
        except (tokens.SensorTokenError, protocol.SensorProtocolError) as exc:
            recorder.errors.append(f"beacon: {exc}")
            return Response(status_code=400)
        recorder.add(Received("beacon", request.cookies["sid"], page_token.page_id, raw, decoded))
        return Response(status_code=204)

    async def sensor_ws(ws: WebSocket):
        sid = ws.cookies.get("sid")
        try:
            page_token = check(ws.query_params.get("token"), sid)
        except tokens.SensorTokenError as exc:
            recorder.errors.append(f"ws: {exc}")
            await ws.close(code=4401)
            return
        await ws.accept()
        with recorder.lock:
            recorder.connections[page_token.page_id] = recorder.connections.get(page_token.page_id, 0) + 1
        pings = PingTracker()
        try:
            while True:
                raw = await ws.receive_text()
                now_ms = time.time() * 1000
                try:
                    decoded = protocol.decode(raw, session_id=sid, page=page_token.page_id, now_ms=now_ms)
                except protocol.SensorProtocolError as exc:
                    recorder.errors.append(f"ws: {exc}")
                    continue
                recorder.add(Received("ws", sid, page_token.page_id, raw, decoded))
                if recorder.pages.get(page_token.page_id) == "/reconnect" and recorder.connections[
                    page_token.page_id
                ] == 1:
                    await ws.close(code=1011)  # the gateway restarts: the sensor must come back on its own
                    return
                if decoded.seq is not None and decoded.seq <= 2:
                    await ws.send_text(pings.ping(time.time() * 1000))
        except WebSocketDisconnect:
            pass

    return Starlette(
        routes=[
            Route("/page1", page1),
            Route("/page2", page2),
            Route("/csp", csp),
            Route("/csp-unmodified", csp_unmodified),
            Route("/spa", spa),
            Route("/secrets", secrets_page),
            Route("/reconnect", reconnect),
            Route("/.ztgate/sensor.js", sensor_js),
            Route("/.ztgate/sensor/beacon", beacon, methods=["POST"]),
            WebSocketRoute("/.ztgate/sensor", sensor_ws),
        ]
    )


class ServerThread:
    """uvicorn on a loopback port in a background thread."""

    def __init__(self, app) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
