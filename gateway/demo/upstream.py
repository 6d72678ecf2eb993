"""The demo "internal app" that `ztgate demo` puts behind the gateway.

It trusts ztgate and nothing else: every request (HTTP and WebSocket, except /healthz) must carry a valid
`X-Ztgate-Assertion`, verified against the gateway's JWKS. Pages cover what the gateway has to cope with: a
multi-page form, an SPA using history.pushState, a strict nonce CSP, a JSON API, WebSockets (echo and a web
terminal), large streamed uploads/downloads, slow responses and large streamed HTML.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.demo import pages
from gateway.demo.assertion import ASSERTION_HEADER, AssertionRejected, AssertionVerifier, Identity, JwksKeys
from gateway.demo.fake_shell import FakeShell
from gateway.demo.streams import big_html_body, download_body

PUBLIC_PATHS = frozenset({"/healthz"})
MAX_JSON_BYTES = 64 * 1024
MAX_WS_TEXT = 64 * 1024
MAX_DOWNLOAD_BYTES = 64 * 1024**3
MAX_BIG_HTML_KB = 100 * 1024
MAX_SLOW_MS = 120_000
MAX_ITEMS = 10_000
PROFILE_LIMITS = {"display_name": 200, "phone": 200, "department": 200, "bio": 2000}
ITEM_LIMITS = {"title": 200, "description": 2000}
_AMOUNT = re.compile(r"^\d{1,7}(\.\d{1,2})?$")


# --- per-app state (lives on app.state: one instance per create_app call) -------------------------------------


@dataclass
class Item:
    id: int
    title: str
    description: str
    owner: str
    created: str


@dataclass
class DemoData:
    items: dict[int, Item] = field(default_factory=dict)
    next_item_id: int = 1
    profiles: dict[str, dict[str, str]] = field(default_factory=dict)
    next_expense: int = 1


# --- assertion check (ASGI middleware, covers HTTP and WebSocket) ----------------------------------------------


class RequireAssertion:
    def __init__(self, app: ASGIApp, *, verifier: AssertionVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        token = _header(scope, ASSERTION_HEADER)
        try:
            identity = await self.verifier.verify(token)
        except AssertionRejected as rejected:
            response = _rejection_response(scope, rejected)
            if scope["type"] == "http":
                await response(scope, receive, send)
            else:
                await _deny_websocket(scope, receive, send, response)
            return
        scope.setdefault("state", {})["identity"] = identity
        await self.app(scope, receive, send)


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode("latin-1")
    for key, value in scope.get("headers", ()):
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


def _wants_json(scope: Scope) -> bool:
    accept = _header(scope, "accept") or ""
    return scope["path"].startswith(("/api/", "/upload", "/download")) or (
        "application/json" in accept and "text/html" not in accept
    )


def _rejection_response(scope: Scope, rejected: AssertionRejected) -> Response:
    title = "Not signed in through ztgate" if rejected.status == 401 else "Cannot verify the gateway"
    headers = {"WWW-Authenticate": 'X-Ztgate-Assertion realm="ztgate-demo"'} if rejected.status == 401 else {}
    if _wants_json(scope):
        return JSONResponse({"error": title, "detail": rejected.message}, rejected.status, headers=headers)
    return HTMLResponse(pages.error_page(rejected.status, title, rejected.message), rejected.status, headers=headers)


async def _deny_websocket(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
    websocket = WebSocket(scope, receive, send)
    if "websocket.http.response" in scope.get("extensions", {}):
        await websocket.send_denial_response(response)  # a real 401 with the explanation
    else:
        await websocket.close(code=1008, reason="missing or invalid X-Ztgate-Assertion")


def identity_of(request: Request | WebSocket) -> Identity:
    return request.state.identity


def nonce() -> str:
    return secrets.token_urlsafe(18)


def html(body: str, status: int = 200, headers: Mapping[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(body, status, headers={"Cache-Control": "no-store", **(headers or {})})


# --- pages ----------------------------------------------------------------------------------------------------


async def healthz(_request: Request) -> Response:
    return PlainTextResponse("ok")


async def home(request: Request) -> Response:
    return html(pages.home_page(identity_of(request)))


async def expense_form(request: Request) -> Response:
    identity = identity_of(request)
    if request.method == "GET":
        return html(pages.expense_form_page(identity, nonce=nonce()))
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        return html(
            pages.error_page(415, "Unsupported form encoding", f"expected a form post, got {content_type!r}"), 415
        )
    form = await request.form(max_files=0, max_fields=20)
    values = {name: str(form.get(name, "")).strip() for name in pages.EXPENSE_FIELDS}
    errors = _expense_errors(values, approval_code=str(form.get("approval_code", "")))
    if errors:
        # Re-show the form with everything typed so far, so a mistake loses nothing (except the secret code).
        return html(pages.expense_form_page(identity, nonce=nonce(), values=values, errors=errors), 400)
    data: DemoData = request.app.state.data
    reference = f"EXP-{data.next_expense:05d}"
    data.next_expense += 1
    return html(pages.expense_result_page(identity, reference=reference, values=values))


def _expense_errors(values: Mapping[str, str], *, approval_code: str) -> list[str]:
    errors = []
    if not values["name"]:
        errors.append("Your name is required.")
    elif len(values["name"]) > 100:
        errors.append("Your name must be at most 100 characters.")
    if len(values["cost_center"]) > 20:
        errors.append("The cost centre must be at most 20 characters.")
    amount = values["amount"].replace(",", ".")
    if not _AMOUNT.match(amount):
        errors.append("The amount must be a number like 123.45 (at most 2 decimals).")
    else:
        try:
            if Decimal(amount) <= 0:
                errors.append("The amount must be more than zero.")
        except InvalidOperation:
            errors.append("The amount must be a number like 123.45.")
    if len(values["description"]) > 2000:
        errors.append("The description must be at most 2000 characters.")
    if not 4 <= len(approval_code) <= 32:
        errors.append("The manager approval code must be 4 to 32 characters.")
    return errors


async def profile_page(request: Request) -> Response:
    return html(pages.profile_page(identity_of(request), nonce=nonce()))


async def csp_page(request: Request) -> Response:
    page_nonce = nonce()
    return html(
        pages.csp_page(identity_of(request), nonce=page_nonce),
        headers={"Content-Security-Policy": pages.csp_policy(page_nonce)},
    )


async def terminal_page(request: Request) -> Response:
    return html(pages.terminal_page(identity_of(request), nonce=nonce()))


# --- JSON API -------------------------------------------------------------------------------------------------


def api_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


async def read_json_object(request: Request) -> dict[str, Any] | JSONResponse:
    """The request's JSON object body, or the error response to send instead."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        return api_error(415, "send the body as application/json")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            return api_error(413, f"JSON body larger than {MAX_JSON_BYTES} bytes")
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return api_error(400, f"body is not valid JSON: {exc}")
    if not isinstance(value, dict):
        return api_error(400, "body must be a JSON object")
    return value


def check_string_fields(value: Mapping[str, Any], limits: Mapping[str, int], *, required: tuple[str, ...] = ()) -> str:
    """An error message for the first bad field, or "" when all are fine."""
    unknown = sorted(set(value) - set(limits))
    if unknown:
        return f"unknown field(s): {', '.join(unknown)} (allowed: {', '.join(limits)})"
    for name in required:
        if not isinstance(value.get(name), str) or not value[name].strip():
            return f"field '{name}' is required and must be a non-empty string"
    for name, limit in limits.items():
        if name in value and not isinstance(value[name], str):
            return f"field '{name}' must be a string"
        if name in value and len(value[name]) > limit:
            return f"field '{name}' must be at most {limit} characters"
    return ""


async def whoami(request: Request) -> Response:
    return JSONResponse(dict(identity_of(request).claims))


async def items_collection(request: Request) -> Response:
    data: DemoData = request.app.state.data
    if request.method == "GET":
        return JSONResponse({"items": [asdict(item) for item in data.items.values()]})
    value = await read_json_object(request)
    if isinstance(value, JSONResponse):
        return value
    if problem := check_string_fields(value, ITEM_LIMITS, required=("title",)):
        return api_error(422, problem)
    if len(data.items) >= MAX_ITEMS:
        return api_error(507, f"the demo keeps at most {MAX_ITEMS} items; delete some first")
    item = Item(
        id=data.next_item_id,
        title=value["title"].strip(),
        description=value.get("description", ""),
        owner=identity_of(request).sub,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    data.items[item.id] = item
    data.next_item_id += 1
    return JSONResponse(asdict(item), 201, headers={"Location": f"/api/items/{item.id}"})


async def item_resource(request: Request) -> Response:
    data: DemoData = request.app.state.data
    item_id: int = request.path_params["item_id"]
    item = data.items.get(item_id)
    if item is None:
        return api_error(404, f"no item with id {item_id}")
    if request.method == "DELETE":
        del data.items[item_id]
        return Response(status_code=204)
    return JSONResponse(asdict(item))


async def profile_api(request: Request) -> Response:
    data: DemoData = request.app.state.data
    sub = identity_of(request).sub
    if request.method == "GET":
        return JSONResponse({"profile": data.profiles.get(sub, {})})
    value = await read_json_object(request)
    if isinstance(value, JSONResponse):
        return value
    if problem := check_string_fields(value, PROFILE_LIMITS):
        return api_error(422, problem)
    data.profiles[sub] = {name: value.get(name, "") for name in PROFILE_LIMITS}
    return JSONResponse({"profile": data.profiles[sub]})


# --- transfers and timing ---------------------------------------------------------------------------------------


def int_param(request: Request, name: str, *, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"query parameter '{name}' must be an integer, got {raw[:40]!r}") from None
    if not 0 <= value <= maximum:
        raise HTTPException(400, f"query parameter '{name}' must be between 0 and {maximum}")
    return value


async def upload(request: Request) -> Response:
    # Streams: each chunk is hashed and dropped, so a 1 GB upload needs no more memory than one chunk.
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        digest.update(chunk)
    return JSONResponse({"bytes": size, "sha256": digest.hexdigest()})


async def download(request: Request) -> Response:
    size = int_param(request, "size", default=1024 * 1024, maximum=MAX_DOWNLOAD_BYTES)
    return StreamingResponse(
        download_body(size),
        media_type="application/octet-stream",
        headers={"Content-Length": str(size), "Content-Disposition": 'attachment; filename="demo.bin"'},
    )


async def slow(request: Request) -> Response:
    ms = int_param(request, "ms", default=1000, maximum=MAX_SLOW_MS)
    await asyncio.sleep(ms / 1000)
    return JSONResponse({"slept_ms": ms})


async def big_html(request: Request) -> Response:
    kb = int_param(request, "kb", default=256, maximum=MAX_BIG_HTML_KB)
    return StreamingResponse(
        big_html_body(kb, nonce()), media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"}
    )


# --- WebSockets -------------------------------------------------------------------------------------------------


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            elif message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


async def ws_terminal(websocket: WebSocket) -> None:
    await websocket.accept()
    shell = FakeShell(identity_of(websocket))

    async def output(data: str) -> None:
        await websocket.send_text(json.dumps({"type": "output", "data": data}))

    async def error(message: str) -> None:
        await websocket.send_text(json.dumps({"type": "error", "data": message}))

    try:
        await output(shell.banner())
        while not shell.closed:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await error('send text frames: {"type":"input","data":"..."}')
                continue
            if len(text) > MAX_WS_TEXT:
                await error(f"frame larger than {MAX_WS_TEXT} characters ignored")
                continue
            try:
                frame = json.loads(text)
            except (ValueError, RecursionError):
                await error("frame is not JSON; expected {\"type\":\"input\",\"data\":\"...\"}")
                continue
            if not isinstance(frame, dict):
                await error("frame must be a JSON object")
                continue
            if frame.get("type") == "resize":
                continue  # the pretend shell has no layout to redo
            if frame.get("type") != "input" or not isinstance(frame.get("data"), str):
                await error("expected {\"type\":\"input\",\"data\":\"<chars>\"}")
                continue
            if echoed := shell.feed(frame["data"]):
                await output(echoed)
        await websocket.close(1000)
    except WebSocketDisconnect:
        return


# --- errors -----------------------------------------------------------------------------------------------------


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if _wants_json(request.scope):
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)
    identity = getattr(request.state, "identity", None)
    title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Bad request")
    return HTMLResponse(
        pages.error_page(exc.status_code, title, str(exc.detail), identity=identity),
        exc.status_code,
        headers=exc.headers,
    )


# --- factory and server -----------------------------------------------------------------------------------------


def create_app(
    *,
    jwks_url: str | None,
    audience: str = "demo",
    issuer: str | None = None,
    jwks: Mapping[str, Any] | None = None,
) -> Starlette:
    """The demo app. Assertions are checked against `jwks_url` (fetched lazily, cached) or, instead, a static
    JWKS document `jwks` (handy when the gateway runs in the same process). With neither, every request gets a
    503 explaining that no gateway is trusted."""
    if jwks_url is not None and jwks is not None:
        raise ValueError("give either jwks_url or jwks, not both")
    keys = JwksKeys(url=jwks_url, document=jwks)
    verifier = AssertionVerifier(keys, audience=audience, issuer=issuer)
    routes = [
        Route("/healthz", healthz),
        Route("/", home),
        Route("/form", expense_form, methods=["GET", "POST"]),
        Route("/profile", profile_page),
        Route("/profile/edit", profile_page),
        Route("/csp", csp_page),
        Route("/terminal", terminal_page),
        Route("/api/whoami", whoami),
        Route("/api/profile", profile_api, methods=["GET", "PUT"]),
        Route("/api/items", items_collection, methods=["GET", "POST"]),
        Route("/api/items/{item_id:int}", item_resource, methods=["GET", "DELETE"]),
        Route("/upload", upload, methods=["POST", "PUT"]),
        Route("/download", download),
        Route("/slow", slow),
        Route("/big.html", big_html),
        WebSocketRoute("/ws/echo", ws_echo),
        WebSocketRoute("/ws/terminal", ws_terminal),
        Mount("/static", StaticFiles(packages=[("gateway.demo", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.data = DemoData()
    # Outermost, so nothing (not even a 404) is answered to a caller the gateway did not vouch for.
    app.add_middleware(RequireAssertion, verifier=verifier)
    return app


class UpstreamServer(uvicorn.Server):
    """A uvicorn server running as a task inside the caller's event loop. It leaves signal handling to the caller
    (the gateway owns SIGTERM/SIGHUP) and binds its socket up front so a busy port is a plain OSError."""

    task: asyncio.Task[None]
    sock: socket.socket

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._wake = asyncio.Event()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    @property
    def url(self) -> str:
        host = self.sock.getsockname()[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def capture_signals(self):  # type: ignore[override]
        return contextlib.nullcontext()

    async def main_loop(self) -> None:
        # uvicorn polls should_exit every 0.1 s; waking on stop() instead makes shutdown immediate (the caller's
        # own shutdown, and test teardown, wait for it). Setting should_exit directly still works.
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    async def stop(self) -> None:
        self.should_exit = True
        self._wake.set()
        await self.task

    async def wait(self) -> None:
        await self.task


async def serve(host: str, port: int, **kw: Any) -> UpstreamServer:
    """Start the demo app (create_app(**kw)) on host:port (0 picks a free port) inside the running event loop.
    Returns once it accepts connections; `await server.stop()` shuts it down."""
    app = create_app(**kw)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"demo upstream cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(512)
    sock.setblocking(False)
    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False,
        ws_max_size=1024 * 1024, timeout_graceful_shutdown=5,
    )
    server = UpstreamServer(config)
    server.sock = sock
    server.task = asyncio.create_task(server.serve(sockets=[sock]), name=f"demo-upstream:{port}")
    while not server.started:
        if server.task.done():
            sock.close()
            server.task.result()  # raises what went wrong
            raise RuntimeError("demo upstream stopped during startup")
        await asyncio.sleep(0.01)
    return server
