"""The agent beside the browser: it owns the Playwright page and does what the (remote) operator says.

It stands for the remote-access tool on a laptop-farm machine: key messages are injected into the page the moment
they arrive (CDP `Input.dispatchKeyEvent`, fire and forget, in arrival order, each stamped with its arrival time as
a remote-access server's injected input is stamped by the OS when it is injected), and `observe` requests are
answered with the page state an operator would see on screen. Protocol: `bench.scenarios.protocol`.

In-process: `server = await Agent(page, cdp).serve("127.0.0.1", 0)`.
Process:    `python -m bench.scenarios.agent --url URL --listen 127.0.0.1:0` launches Chromium, opens URL, prints one
            JSON line `{"host", "port"}` when ready, and runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .protocol import KEY_OPS, MAX_LINE_BYTES, ProtocolError, cdp_key_params, decode, encode
from .relay import parse_hostport

if TYPE_CHECKING:
    from playwright.async_api import CDPSession, Page

_OBSERVE_JS = """([selector, expect]) => {
  const el = document.querySelector(selector);
  if (!el) return {present: false, visible: false, focused: false, value_length: 0, matches: false};
  const box = el.getBoundingClientRect();
  const style = getComputedStyle(el);
  const visible = box.width > 0 && box.height > 0 && style.visibility !== 'hidden' && style.display !== 'none';
  const value = ('value' in el ? el.value : el.textContent) || '';
  return {present: true, visible, focused: document.activeElement === el, value_length: value.length,
          matches: value.endsWith(expect || '')};
}"""


@dataclass(slots=True)
class AgentStats:
    keys: int = 0
    key_errors: int = 0
    observations: int = 0
    protocol_errors: int = 0


class Agent:
    def __init__(self, page: Page, cdp: CDPSession) -> None:
        self.page = page
        self.cdp = cdp
        self.stats = AgentStats()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
        return await asyncio.start_server(self.handle, host, port, limit=MAX_LINE_BYTES)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def reply(message: dict[str, Any]) -> None:
            if not writer.is_closing():
                writer.write(encode(message))

        observer = _Observer(self, reply)
        try:
            while line := await reader.readline():
                try:
                    message = decode(line)
                    self._dispatch(message, reply, observer)
                except ProtocolError as exc:
                    self.stats.protocol_errors += 1
                    reply({"op": "error", "id": _id_of(line), "error": str(exc)})
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # operator gone or a line over MAX_LINE_BYTES: drop this connection, keep serving others
        finally:
            writer.close()

    def _dispatch(self, message: dict[str, Any], reply: Any, observer: _Observer) -> None:
        op = message["op"]
        if op in KEY_OPS:
            params = cdp_key_params(message, time.time())
            self.stats.keys += 1
            # no await: the next key must not wait for this one's acknowledgement (tasks keep arrival order)
            self._spawn(self._key(params, reply))
        elif op == "observe":
            selector, expect = message.get("selector"), message.get("expect", "")
            if not isinstance(selector, str) or not isinstance(expect, str):
                raise ProtocolError('observe needs a string "selector" and optional string "expect"')
            observer.request(message["id"], selector, expect)
        elif op == "ping":
            reply({"op": "pong", "id": message["id"]})
        elif op == "record":
            self._spawn(self._record(message["id"], reply))
        elif op == "reload":
            self._spawn(self._reload(message["id"], reply))
        else:
            raise ProtocolError(f"unknown op {op!r}")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _key(self, params: dict[str, Any], reply: Any) -> None:
        try:
            await self.cdp.send("Input.dispatchKeyEvent", params)
        except Exception as exc:  # Playwright raises its own Error type; report and keep going
            self.stats.key_errors += 1
            reply({"op": "error", "id": None, "error": f"key dispatch failed: {type(exc).__name__}"})

    async def observe(self, selector: str, expect: str) -> dict[str, Any]:
        self.stats.observations += 1
        return await self.page.evaluate(_OBSERVE_JS, [selector, expect])

    async def _record(self, request_id: int, reply: Any) -> None:
        record = await self.page.evaluate("() => window.__rec ? JSON.parse(JSON.stringify(window.__rec)) : null")
        reply({"op": "record", "id": request_id, "record": record})

    async def _reload(self, request_id: int, reply: Any) -> None:
        await self.page.reload()
        reply({"op": "reloaded", "id": request_id})


class _Observer:
    """One page evaluation at a time per connection; requests that arrive meanwhile share the next one.

    Like a screen stream that drops frames when the machine is busy: requests never pile up behind a slow page,
    and every answer reflects the page at or after the moment its request arrived.
    """

    def __init__(self, agent: Agent, reply: Any) -> None:
        self._agent, self._reply = agent, reply
        self._queued: list[tuple[int, str, str]] = []
        self._worker: asyncio.Task[None] | None = None

    def request(self, request_id: int, selector: str, expect: str) -> None:
        self._queued.append((request_id, selector, expect))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._drain())
            self._agent._tasks.add(self._worker)
            self._worker.add_done_callback(self._agent._tasks.discard)

    async def _drain(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            answers: dict[tuple[str, str], dict[str, Any] | str] = {}
            for request_id, selector, expect in batch:
                if (selector, expect) not in answers:
                    try:
                        answers[(selector, expect)] = await self._agent.observe(selector, expect)
                    except Exception as exc:  # Playwright's own error types: answer, keep serving
                        answers[(selector, expect)] = f"observe failed: {type(exc).__name__}"
                answer = answers[(selector, expect)]
                if isinstance(answer, str):
                    self._reply({"op": "error", "id": request_id, "error": answer})
                else:
                    self._reply({"op": "observed", "id": request_id, **answer})


def _id_of(line: bytes) -> int | None:
    with contextlib.suppress(Exception):
        value = json.loads(line).get("id")
        return value if isinstance(value, int) else None
    return None


async def _main(args: argparse.Namespace) -> None:
    from .browser import chromium, open_cdp

    host, port = parse_hostport(args.listen)
    async with chromium(args.chromium) as browser:
        page = await browser.new_page()
        await page.goto(args.url)
        agent = Agent(page, await open_cdp(page))
        server = await agent.serve(host, port)
        print(json.dumps({"host": host, "port": server.sockets[0].getsockname()[1]}), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()
        await agent.close()
        print(json.dumps({"agent": asdict(agent.stats)}), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scenarios.agent", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="page to open and drive")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT for operator connections")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    args = parser.parse_args(argv)
    try:
        parse_hostport(args.listen)
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
