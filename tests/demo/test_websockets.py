"""WebSocket echo and the web terminal's JSON frame protocol, over real WebSocket connections."""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus


def ws_url(demo, path: str) -> str:
    return demo.url.replace("http://", "ws://") + path


async def test_echo_returns_text_and_binary(demo, auth):
    async with connect(ws_url(demo, "/ws/echo"), additional_headers=auth()) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\x01\xff")
        assert await ws.recv() == b"\x00\x01\xff"


@pytest.mark.parametrize("path", ["/ws/echo", "/ws/terminal"])
async def test_websocket_without_assertion_is_refused_with_401(demo, path):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(demo, path)):
            pass
    assert refused.value.response.status_code == 401
    assert b"only reachable through the ztgate gateway" in refused.value.response.body


class Terminal:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.screen = ""

    async def type(self, data: str) -> None:
        await self.ws.send(json.dumps({"type": "input", "data": data}))

    async def read_until(self, text: str) -> str:
        while text not in self.screen:
            frame = json.loads(await self.ws.recv())
            assert frame["type"] == "output", frame
            self.screen += frame["data"]
        before, _, self.screen = self.screen.partition(text)
        return before + text


async def test_terminal_banner_echo_backspace_and_commands(demo, auth):
    async with connect(ws_url(demo, "/ws/terminal"), additional_headers=auth()) as ws:
        term = Terminal(ws)
        assert "alice@intranet:~$ " in await term.read_until("$ ")
        await term.type("ech")
        assert await term.read_until("ech") == "ech"
        await term.type("x\x7fo hi there\r")  # a typo, erased with backspace
        out = await term.read_until("$ ")
        assert "x\b \bo hi there\r\nhi there\r\n" in out
        await term.type("whoami\r")
        out = await term.read_until("$ ")
        assert "sub=u-alice" in out and "groups=engineering,vpn-users" in out and "ztgate_state=active" in out
        await term.type("ls\r")
        assert "notes.txt" in await term.read_until("$ ")
        await term.type("date\r")
        assert "UTC" in await term.read_until("$ ")
        await term.type("rm -rf /\r")
        assert "rm: command not found" in await term.read_until("$ ")
        await term.type("exit\r")
        assert "logout" in await term.read_until("logout")
        await ws.wait_closed()
        assert ws.close_code == 1000


async def test_terminal_bad_frames_get_an_error_and_the_session_continues(demo, auth):
    async with connect(ws_url(demo, "/ws/terminal"), additional_headers=auth()) as ws:
        await ws.recv()  # banner
        for bad in ["not json", json.dumps(["input"]), json.dumps({"type": "input", "data": 5}),
                    json.dumps({"type": "paste"})]:
            await ws.send(bad)
            frame = json.loads(await ws.recv())
            assert frame["type"] == "error" and frame["data"]
        await ws.send(b"\x01binary")
        assert json.loads(await ws.recv())["type"] == "error"
        await ws.send(json.dumps({"type": "resize", "cols": 80, "rows": 24}))
        await ws.send(json.dumps({"type": "input", "data": "pwd\r"}))
        term = Terminal(ws)
        assert "/home/alice" in await term.read_until("$ ")
