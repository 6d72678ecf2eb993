"""One malformed frame used to blind the scorer for its stream, and no policy could act on it. Through a real
`ztgate run` (real mitmproxy, the shipped default policies) with the demo app's web terminal and the Guacamole
stand-in (tests/support/guac_server.py) behind it: a malformed frame makes the stream opaque, and the shipped
`integrity/unparsed-input` rule steps the session up at once, with no further input; the opaque stream, which cannot
be held, is cut; the step-up passed, a new stream is parsed and the session stays active. A genuine session (typing,
a paste larger than the terminal parser decodes) never triggers it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
import uuid

import httpx
import pyotp
import pytest
import websockets

from tests.support.guac_server import instruction
from tests.support.processes import (PYTHON, ROOT, free_port, gateway_config, login, make_users, run_gateway,
                                     run_upstream, session_sid, spawn, wait_port, wait_until)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("opaque-stream")
    users = make_users(tmp / "users.yaml", [{"username": name} for name in
                                            ("term-blind", "term-genuine", "guac-blind")])
    port, guac_port = free_port(), free_port()
    guac = spawn("guac-server", [PYTHON, str(ROOT / "tests" / "support" / "guac_server.py"), str(guac_port)], tmp)
    try:
        wait_port(guac_port)
        with run_upstream(tmp, jwks_port=port) as upstream:
            routes = [{"name": "guac", "kind": "guacamole", "path_prefix": "/guac",
                       "upstream": f"http://127.0.0.1:{guac_port}"}]
            # no policies dir: the shipped defaults decide
            cfg = gateway_config(port=port, upstream=upstream, tmp=tmp, users_file=tmp / "users.yaml",
                                 admin_token=secrets.token_urlsafe(24), extra_routes=routes)
            with run_gateway(tmp, cfg) as gw:
                yield Env(gw, users, guac_port)
    finally:
        guac.stop(5)


class Env:
    def __init__(self, gw, users, guac_port) -> None:
        self.gw, self.users, self.guac_port = gw, users, guac_port

    def ws_url(self, path: str) -> str:
        return self.gw.url.replace("http://", "ws://") + path

    def view(self, sid: str) -> dict:
        return self.gw.admin("GET", f"/sessions/{sid}").json()

    def signed_in(self, username: str) -> tuple[httpx.Client, str, str]:
        client = httpx.Client(base_url=self.gw.url, timeout=30)
        assert login(client, self.users[username]).status_code == 303
        return client, session_sid(client), client.cookies.get("ztgate_session")

    def stepped_up_by(self, sid: str) -> str | None:
        view = self.view(sid)
        return view["decision"].get("rule_id") if view["state"] == "step_up_required" else None


@contextlib.asynccontextmanager
async def terminal(env: Env, cookie: str, outputs: list[str]):
    """The demo terminal through the gateway, once its banner is in; the reader task ends with the connection."""
    async with websockets.connect(env.ws_url("/ws/terminal"), open_timeout=10, max_size=None,
                                  additional_headers={"Cookie": f"ztgate_session={cookie}"}) as ws:
        async def read() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for message in ws:
                    outputs.append(json.loads(message).get("data", ""))

        reader = asyncio.create_task(read())
        try:
            await until(lambda: outputs, "the banner")
            yield ws, reader
        finally:
            reader.cancel()


async def until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def type_text(ws, text: str, pause: float = 0.12) -> None:
    for ch in text:
        await ws.send(json.dumps({"type": "input", "data": ch}))
        await asyncio.sleep(pause)


def totp_step_up(client: httpx.Client, user) -> None:
    """The step-up asks for a security key; the user has none registered, so TOTP answers it (the fallback)."""
    page = client.get("/.ztgate/mfa", params={"next": "/"}, headers={"Accept": "text/html"})
    csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
    code = pyotp.TOTP(user.totp_secret).at(time.time() + 30)  # the login's code is spent
    ok = client.post("/.ztgate/mfa", data={"csrf": csrf, "next": "/", "otp": code})
    assert ok.status_code == 303, ok.text[:300]


def test_a_malformed_terminal_frame_steps_up_at_once_and_the_blind_stream_is_cut(env):
    client, sid, cookie = env.signed_in("term-blind")
    outputs: list[str] = []

    async def session() -> bool:
        async with terminal(env, cookie, outputs) as (ws, reader):
            await type_text(ws, "ls")
            await until(lambda: any("s" in o for o in outputs), "the echo")
            assert env.view(sid)["state"] == "active"
            await ws.send("not json")  # one frame the parser cannot read: from here on nothing typed is scored
            # the decision comes from the malformed frame alone: nothing more is sent until it is in force
            await until(lambda: env.stepped_up_by(sid) == "unparsed-input", "the unparsed-input step-up")
            seen = len(outputs)
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(json.dumps({"type": "input", "data": "blind-canary\r"}))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), 10)  # ends when the gateway cuts the stream
            assert not any("blind-canary" in o for o in outputs[seen:])
            return reader.done()

    assert asyncio.run(session()), "the opaque stream was not cut under the step-up"
    view = env.view(sid)
    assert view["step_up"]["method"] == "webauthn" and view["step_up"]["rule_id"] == "unparsed-input"
    log = env.gw.proc.log()
    assert f"session {sid}: terminal stream no longer parsed (malformed terminal input frame" in log
    assert "integrity.yaml/unparsed-input" in log

    # the step-up passed answers it: a new stream is parsed from its start and the rule does not fire again
    totp_step_up(client, env.users["term-blind"])
    assert env.view(sid)["state"] == "active"
    cookie = client.cookies.get("ztgate_session")  # reissued by the step-up

    async def next_session() -> None:
        fresh: list[str] = []
        async with terminal(env, cookie, fresh) as (ws, _):
            await type_text(ws, "pwd\r")
            await until(lambda: len(fresh) >= 4, "the shell's answer")
            await asyncio.sleep(0.5)

    asyncio.run(next_session())
    assert env.view(sid)["state"] == "active"
    assert wait_until(lambda: (env.view(sid).get("assessment") or {}).get("evidence", {}).get("keystrokes", 0) >= 4,
                      timeout=10, what="the new stream's keys at the scorer")
    client.close()


def test_a_genuine_terminal_session_with_a_huge_paste_is_not_stepped_up(env):
    client, sid, cookie = env.signed_in("term-genuine")
    outputs: list[str] = []

    async def session() -> None:
        async with terminal(env, cookie, outputs) as (ws, _):
            await type_text(ws, "help\r")
            # a paste longer than the parser decodes (Limits.max_terminal_frame): a paste, not an unparsed stream
            await ws.send(json.dumps({"type": "input", "data": "y" * (70 * 1024)}))
            await ws.send(json.dumps({"type": "resize", "cols": 120, "rows": 40}))
            await type_text(ws, "whoami\r")
            await until(lambda: sum("\n" in o for o in outputs) >= 2, "the shell's answers")
            await asyncio.sleep(1.0)

    asyncio.run(session())
    view = env.view(sid)
    assert view["state"] == "active" and not view["decision"], view["decision"]
    assert f"session {sid}: terminal stream no longer parsed" not in env.gw.proc.log()
    client.close()


def test_a_malformed_guacamole_instruction_steps_up_at_once_and_the_quiet_blind_stream_is_cut(env):
    client, sid, cookie = env.signed_in("guac-blind")
    label = uuid.uuid4().hex

    async def session() -> None:
        async with websockets.connect(env.ws_url(f"/guac/websocket-tunnel?label={label}"),
                                      subprotocols=["guacamole"], open_timeout=10, max_size=None,
                                      additional_headers={"Cookie": f"ztgate_session={cookie}"}) as ws:
            async def drain() -> None:  # the server's frames keep coming (syncs at 20 fps)
                with contextlib.suppress(websockets.ConnectionClosed):
                    async for _ in ws:
                        pass

            reader = asyncio.create_task(drain())
            for keysym in (0x61, 0x62):
                await ws.send(instruction("key", str(keysym), "1"))
                await asyncio.sleep(0.05)
                await ws.send(instruction("key", str(keysym), "0"))
                await asyncio.sleep(0.1)
            assert env.view(sid)["state"] == "active"
            # `+99` is a key guacd would press (atoi), but not a number the parser agrees on: the stream goes opaque
            await ws.send(instruction("key", "+99", "1"))
            await until(lambda: env.stepped_up_by(sid) == "unparsed-input", "the unparsed-input step-up")
            # the client sends nothing more: the stream cannot be held, so the server's next frame cuts it (else it
            # would carry on unread once the step-up is passed)
            await asyncio.wait_for(reader, 10)

    asyncio.run(session())
    assert f"session {sid}: guacamole stream no longer parsed (non-numeric argument)" in env.gw.proc.log()
    client.close()
