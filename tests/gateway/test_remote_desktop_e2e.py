"""Remote-desktop capture and enforcement through a real `ztgate run`: Guacamole, noVNC and web-terminal sessions
over real WebSockets, with real upstreams behind the gateway.

- Guacamole: there is no guacd here, so tests/support/guac_server.py plays guacd + the WebSocket tunnel (the one
  stand-in in this module). The client replays the recorded client side of tests/capture/fixtures/
  guacamole_session.rec (typing, pointer, a clipboard paste, a file upload), echoes the live server's syncs and
  pings like guacamole-common-js.
- noVNC: x11vnc on Xvfb behind websockify (the real noVNC upstream), with a small RFB-over-WebSocket client;
  websockify's `--record` file shows what the upstream actually received.
- Terminal: the demo app's /ws/terminal (JSON frames), through the `kind: terminal` route.

Every upstream counts what reached it, so "dropped before the upstream sees it" is observed, not inferred.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import re
import secrets
import shutil
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Self

import httpx
import pyotp
import pytest
import websockets

from tests.capture.recording import FIXTURES, load
from tests.support.guac_server import instruction, split_instructions
from tests.support.processes import (PYTHON, ROOT, RssSampler, free_port, gateway_config, login, make_users,
                                     run_gateway, run_redis, run_upstream, run_vnc_server, session_sid, spawn,
                                     wait_port,
                                     wait_until)
from tests.support.rfb_ws import (RfbWebSocketClient, client_cut_text, client_stream_from_record,
                                  count_client_messages, key_event, pointer_event, set_encodings, update_request)

pytestmark = pytest.mark.slow

WEBSOCKIFY = Path(sys.executable).parent / "websockify"
HAVE_VNC = bool(shutil.which("Xvfb") and shutil.which("x11vnc")) and WEBSOCKIFY.exists()

POLICY = """\
policies:
  - id: remote-desktop-transfers
    description: test users whose remote-desktop sessions may not move data in or out
    match: {groups: [rd-restricted]}
    rules:
      - id: no-transfers
        when: "true"
        action: restrict
        params: {block_clipboard: true, block_file_transfer: true}
"""

# what the recorded Guacamole client sends that must never be stored by the gateway (clipboard text, file name
# and content, distinctive keysyms) plus the canaries the other tests send
GUAC_CANARIES = ("cGFzdGVk", "report.txt", "Zmlyc3QgcGFydCA", "c2Vjb25kIHBhcnQ", "hellp", "hello world")
KEYSYM_CANARIES = ("65507", "65293", "269025042")
OTHER_CANARIES = ("pasted-terminal-canary", "novnc-clipboard-canary")
MUTE_KEYSYM = 0x1008FF12  # XF86AudioMute: a keysym no log line would contain by chance


# ---------------------------------------------------------------------------------------------- environment


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("remote-desktop")
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "remote_desktop.yaml").write_text(POLICY)
    users = make_users(tmp / "users.yaml", [
        {"username": "guac-plain"}, {"username": "guac-restricted", "groups": ["rd-restricted"]},
        {"username": "guac-stepup"}, {"username": "guac-long"}, {"username": "term-user"},
        {"username": "term-held"}, {"username": "guac-garbled"},
        {"username": "term-tty"},
        {"username": "vnc-plain"}, {"username": "vnc-restricted", "groups": ["rd-restricted"]},
        {"username": "guac-reconnect", "groups": ["rd-restricted"]}])
    prefix = f"ztgate-test-rd-{uuid.uuid4().hex[:10]}:"
    port, guac_port, ws_port = free_port(), free_port(), free_port()
    guac = spawn("guac-server", [PYTHON, str(ROOT / "tests" / "support" / "guac_server.py"), str(guac_port)], tmp)
    websockify = None
    try:
        wait_port(guac_port)
        # a Redis of our own: one test restarts it under a live session
        with run_redis(tmp) as redis_handle, run_upstream(tmp, jwks_port=port) as upstream, \
                _maybe_vnc(tmp) as vnc_port:
            routes = [{"name": "guac", "kind": "guacamole", "path_prefix": "/guac",
                       "upstream": f"http://127.0.0.1:{guac_port}"}]
            if vnc_port is not None:
                websockify = spawn("websockify", [str(WEBSOCKIFY), "--record", str(tmp / "novnc-rec"),
                                                  f"127.0.0.1:{ws_port}", f"127.0.0.1:{vnc_port}"], tmp)
                wait_port(ws_port)
                routes.append({"name": "desktop", "kind": "novnc", "path_prefix": "/novnc",
                               "upstream": f"http://127.0.0.1:{ws_port}"})
            cfg = gateway_config(port=port, upstream=upstream, tmp=tmp, users_file=tmp / "users.yaml",
                                 store=redis_handle.url, prefix=prefix, admin_token=secrets.token_urlsafe(24),
                                 policies_dir=str(policies), extra_routes=routes)
            with run_gateway(tmp, cfg) as gw:
                yield Env(gw, users, tmp, guac_port, redis_handle, prefix, vnc_port is not None)
    finally:
        if websockify is not None:
            websockify.stop(5)
        guac.stop(5)


class _maybe_vnc:
    def __init__(self, tmp: Path) -> None:
        self._cm = run_vnc_server(tmp) if HAVE_VNC else None

    def __enter__(self) -> int | None:
        return self._cm.__enter__() if self._cm is not None else None

    def __exit__(self, *exc) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)


class Env:
    def __init__(self, gw, users, tmp, guac_port, redis, prefix, have_vnc) -> None:
        self.gw, self.users, self.tmp = gw, users, tmp
        self.guac_port, self.redis, self.prefix, self.have_vnc = guac_port, redis, prefix, have_vnc

    def ws_url(self, path: str) -> str:
        return self.gw.url.replace("http://", "ws://") + path

    def guac_stats(self, label: str) -> Counter:
        r = httpx.get(f"http://127.0.0.1:{self.guac_port}/stats", params={"label": label}, timeout=5)
        return Counter(r.json()) if r.status_code == 200 else Counter()

    def view(self, sid: str) -> dict:
        return self.gw.admin("GET", f"/sessions/{sid}").json()

    def signed_in(self, username: str) -> tuple[httpx.Client, str, str]:
        client = httpx.Client(base_url=self.gw.url, timeout=30)  # password hashing is slow on a loaded machine
        assert login(client, self.users[username]).status_code == 303
        return client, session_sid(client), client.cookies.get("ztgate_session")


def _assessment(env: Env, sid: str) -> dict:
    return env.view(sid).get("assessment") or {}


def _pointer_strokes(assessment: dict) -> int:
    """Pointer strokes the scorer has seen: the automation signal's samples are keystroke flights + strokes."""
    automation = assessment["signals"]["automation"]
    return int(automation["evidence"]["samples"] - automation["details"].get("flights", 0))


def _signal_detail(env: Env, sid: str, signal: str, name: str) -> float:
    return float(((_assessment(env, sid).get("signals") or {}).get(signal) or {}).get("details", {}).get(name, 0))


# ---------------------------------------------------------------------------------------------- Guacamole client


class GuacClient:
    """What guacamole-common-js does on the tunnel: render each frame (echo its sync), ping every 500 ms."""

    def __init__(self, ws, render_ms: float = 12.0) -> None:
        self.ws = ws
        self.render_s = render_ms / 1000.0
        self.received = Counter()
        self.acks: list[tuple[str, str]] = []  # (stream, status code)
        self._tasks: list[asyncio.Task] = []
        self.closed = asyncio.Event()
        # held while a replayed instruction is split across messages: a sync echo or ping sent in between
        # would corrupt the client's own stream
        self._whole = asyncio.Lock()

    async def __aenter__(self) -> Self:
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._ping())]
        return self

    async def __aexit__(self, *exc) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _read(self) -> None:
        buf = ""
        try:
            async for message in self.ws:
                instructions, buf = split_instructions(buf + message)
                for e in instructions:
                    self.received[e[0]] += 1
                    if e[0] == "sync":
                        asyncio.get_running_loop().call_later(self.render_s, self._echo, e[1])
                    elif e[0] == "ack":
                        self.acks.append((e[1], e[3]))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    def _echo(self, stamp: str) -> None:
        if not self.closed.is_set():
            self._tasks.append(asyncio.create_task(self.send(instruction("sync", stamp))))

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            await self.send(instruction("", "ping", str(int(time.time() * 1000))))

    async def send(self, text: str) -> None:
        async with self._whole:
            await self._send(text)

    async def _send(self, text: str) -> None:
        try:
            await self.ws.send(text)
        except websockets.ConnectionClosed:
            pass

    async def replay_fixture(self, speed: float = 1.0) -> None:
        """The recorded client side, at its recorded pace; its stale syncs and pings are left out (live ones flow)."""
        previous = None
        for direction, t, payload in load(FIXTURES / "guacamole_session.rec"):
            text = payload.decode()
            if direction != "C" or text.startswith(("4.sync,", "0.,4.ping,")):
                continue
            if previous is not None:
                await asyncio.sleep((t - previous) / 1000.0 / speed)
            previous = t
            if not self._whole.locked():
                await self._whole.acquire()
            await self._send(text)
            if text.endswith(";"):
                self._whole.release()

    async def type_keys(self, keysyms: list[int], gap: float = 0.09, release: bool = True) -> None:
        for keysym in keysyms:
            await self.send(instruction("key", str(keysym), "1"))
            if release:
                await asyncio.sleep(0.06)
                await self.send(instruction("key", str(keysym), "0"))
            await asyncio.sleep(gap)


def fixture_client_counts() -> Counter:
    """What the replayed fixture sends, counted like the test server counts it."""
    text = "".join(p.decode() for d, _, p in load(FIXTURES / "guacamole_session.rec")
                   if d == "C" and not p.decode().startswith(("4.sync,", "0.,4.ping,")))
    instructions, rest = split_instructions(text)
    assert rest == ""
    counts = Counter()
    for e in instructions:
        counts["key_down" if e[0] == "key" and e[2] == "1" else "key_up" if e[0] == "key" else e[0]] += 1
    return counts


def guac_connect(env: Env, cookie: str, label: str, **query):
    params = "&".join(f"{k}={v}" for k, v in {"label": label, **query}.items())
    return websockets.connect(env.ws_url(f"/guac/websocket-tunnel?{params}"), subprotocols=["guacamole"],
                              additional_headers={"Cookie": f"ztgate_session={cookie}"}, max_size=None,
                              open_timeout=10)


# ---------------------------------------------------------------------------------------------- Guacamole


def test_guacamole_session_reaches_the_scorer_and_nothing_typed_is_stored(env):
    client, sid, cookie = env.signed_in("guac-plain")
    label = uuid.uuid4().hex
    expected = fixture_client_counts()

    async def session() -> GuacClient:
        async with guac_connect(env, cookie, label) as ws:
            assert ws.subprotocol == "guacamole"
            async with GuacClient(ws) as guac:
                await guac.replay_fixture()
                await guac.type_keys([MUTE_KEYSYM])
                await asyncio.sleep(1.0)  # last syncs and pings answered
                return guac

    guac = asyncio.run(session())
    upstream = wait_until(lambda: (s := env.guac_stats(label))["closed"] and s, timeout=10, what="upstream close")
    # everything the client sent reached the upstream (no restriction): input, clipboard, the file upload
    for name in ("mouse", "clipboard", "file", "blob", "end"):
        assert upstream[name] == expected[name], name
    assert upstream["key_down"] == expected["key_down"] + 1 and upstream["key_up"] == expected["key_up"] + 1
    assert upstream["sync_echo"] > 10 and upstream["ping"] >= 8 and upstream["ack"] == 0
    assert guac.received["sync"] > 10 and all(status == "0" for _, status in guac.acks)

    assessment = wait_until(lambda: (a := _assessment(env, sid)).get("evidence", {}).get("keystrokes", 0)
                            >= expected["key_down"] and a, timeout=10, what="keystrokes at the scorer")
    network = assessment["signals"]["network"]["details"]
    print(f"\nGuacamole through the gateway: upstream saw {dict(upstream)}; scorer evidence "
          f"{assessment['evidence']}, network details {network}")
    assert assessment["evidence"]["keystrokes"] == expected["key_down"] + 1
    assert network["app_samples"] >= 5  # GUAC_SYNC probes (and tunnel pings) measured at the gateway
    assert _pointer_strokes(assessment) >= 1
    _assert_nothing_typed_stored(env, [sid])
    client.close()


def test_guacamole_restriction_drops_clipboard_and_file_streams(env):
    client, sid, cookie = env.signed_in("guac-restricted")
    assert client.get("/guac/").status_code == 200  # the session's first request: the policy applies
    wait_until(lambda: env.view(sid)["state"] == "restricted", timeout=10, what="the restriction")
    label = uuid.uuid4().hex
    expected = fixture_client_counts()

    async def session() -> GuacClient:
        async with guac_connect(env, cookie, label) as ws, GuacClient(ws) as guac:
            await guac.replay_fixture(speed=2.0)
            await asyncio.sleep(0.8)
            return guac

    guac = asyncio.run(session())
    upstream = wait_until(lambda: (s := env.guac_stats(label))["closed"] and s, timeout=10, what="upstream close")
    print(f"\nrestricted Guacamole session: upstream saw {dict(upstream)}; client got acks {guac.acks}")
    # input still flows; no clipboard or file instruction (nor any of their blobs) reached the upstream
    assert upstream["key_down"] == expected["key_down"] and upstream["mouse"] == expected["mouse"]
    assert upstream["clipboard"] == upstream["file"] == upstream["blob"] == upstream["end"] == 0
    # the client is told: each refused stream is acknowledged with CLIENT_FORBIDDEN (0x0303 = 771)...
    assert ("0", "771") in guac.acks and ("1", "771") in guac.acks
    # ... and the refusal went to the client, not to the upstream
    assert upstream["ack"] == 0
    view = env.view(sid)
    assert view["state"] == "restricted" and view["restrictions"].get("block_clipboard")
    assert view["assessment"]["evidence"]["keystrokes"] >= expected["key_down"]
    client.close()


def test_guacamole_step_up_holds_input_until_totp_and_terminate_closes(env):
    client, sid, cookie = env.signed_in("guac-stepup")
    user = env.users["guac-stepup"]
    label = uuid.uuid4().hex
    timings: dict[str, float] = {}

    async def session() -> None:
        async with guac_connect(env, cookie, label) as ws:
            async with GuacClient(ws) as guac:
                await guac.type_keys([0x61, 0x62, 0x63, 0x64])
                await _until(lambda: (s := env.guac_stats(label))["key_down"] == s["key_up"] == 4,
                             "input before the step-up")
                before = env.guac_stats(label)

                r = await asyncio.to_thread(env.gw.admin, "POST", f"/sessions/{sid}/step-up")
                assert r.status_code == 200 and r.json()["state"] == "step_up_required"
                await guac.type_keys([0x65, 0x66, 0x67, MUTE_KEYSYM])
                for x, mask in ((300, 0), (310, 1), (320, 1), (320, 0)):  # a move, a drag, the release
                    await guac.send(instruction("mouse", str(x), "200", str(mask)))
                    await asyncio.sleep(0.03)
                await asyncio.sleep(0.6)
                held = env.guac_stats(label)
                print(f"\nduring the step-up the upstream saw {held['key_down'] - before['key_down']} key presses, "
                      f"{held['key_up'] - before['key_up']} releases, {held['mouse'] - before['mouse']} pointer "
                      "reports")
                assert held["key_down"] == before["key_down"]  # no key press got through
                assert held["key_up"] - before["key_up"] == 4  # releases pass: nothing stays stuck down
                assert held["mouse"] == before["mouse"]
                assert held["sync_echo"] > before["sync_echo"]  # the picture keeps flowing

                # the TOTP step-up (a code of the next window: the login's code is spent)
                await asyncio.to_thread(_totp_step_up, client, user)
                assert env.view(sid)["state"] == "active"
                await guac.type_keys([0x68, 0x69, 0x6A])
                await _until(lambda: env.guac_stats(label)["key_down"] == 7, "input after the step-up")

                t0 = time.perf_counter()
                r = await asyncio.to_thread(env.gw.admin, "POST", f"/sessions/{sid}/terminate")
                assert r.status_code == 200
                await asyncio.wait_for(guac.closed.wait(), 10)
                timings["terminate_to_close_ms"] = 1000 * (time.perf_counter() - t0)

    asyncio.run(session())
    print(f"terminate call -> WebSocket closed: {timings['terminate_to_close_ms']:.0f} ms")
    assert env.view(sid)["connections"] == 0
    client.close()


def test_a_key_guacd_would_read_but_the_gateway_cannot_is_not_let_through_a_hold(env):
    """`+97` is a key guacd reads with atoi; the gateway refuses to guess at it, so its stream goes opaque. Under a
    step-up hold, that message used to be forwarded as it was (and guacd pressed the key); now nothing unparsed
    passes and the connection is cut."""
    _, sid, cookie = env.signed_in("guac-garbled")
    label = uuid.uuid4().hex

    async def session() -> None:
        async with guac_connect(env, cookie, label) as ws:
            async with GuacClient(ws) as guac:
                await guac.type_keys([0x61])
                await _until(lambda: env.guac_stats(label)["key_down"] == 1, "input before the step-up")
                r = await asyncio.to_thread(env.gw.admin, "POST", f"/sessions/{sid}/step-up")
                assert r.status_code == 200 and r.json()["state"] == "step_up_required"
                await guac.send(instruction("key", "+98", "1"))
                await asyncio.wait_for(guac.closed.wait(), 10)
        await asyncio.sleep(0.3)
        assert env.guac_stats(label)["key_down"] == 1

    asyncio.run(session())
    assert f"session {sid}: guacamole stream no longer parsed (non-numeric argument)" in env.gw.proc.log()


def _totp_step_up(client: httpx.Client, user) -> None:
    page = client.get("/.ztgate/mfa", params={"next": "/guac/"}, headers={"Accept": "text/html"})
    csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
    code = pyotp.TOTP(user.totp_secret).at(time.time() + 30)
    ok = client.post("/.ztgate/mfa", data={"csrf": csrf, "next": "/guac/", "otp": code})
    assert ok.status_code == 303, ok.text[:300]


async def _until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def test_long_guacamole_session_memory_stays_flat_and_rtt_is_sampled(env):
    """Many frames on one WebSocket with no HTTP request after the upgrade: RSS stays flat, and the gateway
    still samples the client path's kernel RTT (NET events) on the WebSocket's messages."""
    client, sid, cookie = env.signed_in("guac-long")
    label = uuid.uuid4().hex
    fps, png_chars, pngs, seconds = 100, 6000, 6, 8.0
    result: dict = {}

    async def session() -> None:
        async with guac_connect(env, cookie, label, fps=fps, png=png_chars, pngs=pngs) as ws:
            async with GuacClient(ws, render_ms=3) as guac:
                async def pointer() -> None:
                    i = 0
                    while True:
                        i += 1
                        await guac.send(instruction("mouse", str(100 + i % 400), str(100 + i % 300), "0"))
                        await asyncio.sleep(0.02)

                mover = asyncio.create_task(pointer())
                await asyncio.sleep(2.0)  # warm-up: buffers and caches reach their working size
                with RssSampler(env.gw.proc, interval=0.2) as rss:
                    await asyncio.sleep(seconds)
                mover.cancel()
                result.update(frames=guac.received["sync"], baseline=rss.baseline, peak=rss.peak,
                              last=rss.samples[-1] if rss.samples else rss.baseline)
                result["tcp_samples"] = await asyncio.to_thread(_signal_detail, env, sid, "network", "tcp_samples")

    asyncio.run(session())
    mib = (len("".join(instruction("png", "14", "0", "0", "10", "A" * png_chars) for _ in range(pngs)))
           * result["frames"] / 2**20)
    print(f"\nlong session: {result['frames']} frames (~{mib:.0f} MiB) through the gateway; gateway RSS "
          f"{result['baseline'] / 1024:.1f} -> peak {result['peak'] / 1024:.1f} MiB (last "
          f"{result['last'] / 1024:.1f}); TCP RTT samples {result['tcp_samples']:.0f}")
    assert result["frames"] > fps * seconds * 0.5
    # kept messages would add roughly the volume itself (well over 20 MiB in the measured window)
    assert result["peak"] - result["baseline"] < 10 * 1024
    # one sample at the upgrade, then one per 5 s on the WebSocket's messages (none without them)
    assert result["tcp_samples"] >= 2
    client.close()


def test_guacamole_restriction_holds_across_a_store_reconnect(env):
    """After the store's broadcast channel reconnects, the gateway forgets its cached session views; a live
    stream makes no request that would fetch its session again, and its restriction must still apply."""
    client, sid, cookie = env.signed_in("guac-reconnect")
    assert client.get("/guac/").status_code == 200
    wait_until(lambda: env.view(sid)["state"] == "restricted", timeout=10, what="the restriction")
    label = uuid.uuid4().hex

    def paste(stream: str) -> str:
        return (instruction("clipboard", stream, "text/plain") + instruction("blob", stream, "cGFzdGVk")
                + instruction("end", stream))

    async def session() -> GuacClient:
        async with guac_connect(env, cookie, label) as ws, GuacClient(ws) as guac:
            await guac.send(paste("0"))
            await guac.type_keys([0x61])
            await _until(lambda: env.guac_stats(label)["key_up"] == 1, "the first key")
            resyncs = env.gw.proc.log().count("resynchronising")
            await asyncio.to_thread(env.redis.stop, True)
            await asyncio.to_thread(env.redis.start)
            await _until(lambda: env.gw.proc.log().count("resynchronising") > resyncs,
                         "the gateway to resynchronise with the store", timeout=30)
            await guac.send(paste("1"))
            await guac.type_keys([0x62])
            await _until(lambda: env.guac_stats(label)["key_up"] == 2, "the key after the reconnect")
            return guac

    guac = asyncio.run(session())
    upstream = env.guac_stats(label)
    print(f"\nrestricted session across a store reconnect: upstream saw {dict(upstream)}; acks {guac.acks}")
    assert upstream["clipboard"] == upstream["blob"] == 0
    assert ("1", "771") in guac.acks
    client.close()


# ---------------------------------------------------------------------------------------------- web terminal


def test_terminal_keys_pastes_and_stimuli(env):
    client, sid, cookie = env.signed_in("term-user")
    outputs: list[str] = []

    async def session() -> None:
        async with _terminal(env, cookie, outputs) as (ws, reader):
            await asyncio.sleep(0.5)  # the user reads the prompt, then reacts
            for ch, pause in (("l", 0.15), ("s", 0.15), ("x", 0.3), ("\x7f", 0.2), ("\r", 0.7)):
                await ws.send(json.dumps({"type": "input", "data": ch}))
                await asyncio.sleep(pause)
            await ws.send(json.dumps({"type": "input", "data": "echo pasted-terminal-canary\r"}))
            await _until_async(lambda: any("pasted-terminal-canary" in o for o in outputs), "the paste's output")
            await asyncio.sleep(0.3)

    asyncio.run(session())
    assessment = wait_until(lambda: (a := _assessment(env, sid)).get("evidence", {}).get("keystrokes", 0) >= 5
                            and a, timeout=10, what="terminal keystrokes at the scorer")
    relay = assessment["signals"]["relay"]["details"]
    print(f"\nterminal through the gateway: evidence {assessment['evidence']}, relay details {relay}")
    # five typed keys (l, s, x, Backspace, Enter); the paste's 28 characters are one paste, not typing
    assert assessment["evidence"]["keystrokes"] == 5
    # the banner (OUTPUT) answered by the first key, the echo of `x` (ECHO) answered by Backspace: both stimuli
    # reached the scorer as reactions
    assert relay["reactions"] >= 2
    client.close()


def test_an_unparseable_terminal_frame_under_a_hold_passes_nothing_and_is_cut(env):
    """Under a step-up the gateway holds input. A frame it cannot parse could be input the terminal accepts, so it
    must not pass, nor anything after it: before this was fixed both reached the shell, which echoed the second."""
    client, sid, cookie = env.signed_in("term-held")
    outputs: list[str] = []

    async def session() -> bool:
        async with _terminal(env, cookie, outputs) as (ws, reader):
            r = await asyncio.to_thread(env.gw.admin, "POST", f"/sessions/{sid}/step-up")
            assert r.status_code == 200 and r.json()["state"] == "step_up_required"
            await asyncio.sleep(0.3)
            seen = len(outputs)
            await ws.send("not json")  # not a frame the parser can read (the demo shell answers it with an error)
            try:
                await ws.send(json.dumps({"type": "input", "data": "held-canary"}))
                await asyncio.wait_for(reader, 10)  # ends when the gateway cuts the connection
            except (websockets.ConnectionClosed, asyncio.TimeoutError):
                pass
            cut = reader.done()
            assert not any("held-canary" in o for o in outputs[seen:])
            return cut

    assert asyncio.run(session()), "the connection was not cut"
    client.close()


def test_the_terminal_dialect_is_what_the_upstream_chose_not_what_the_client_offered(env):
    """A client that offers the ttyd subprotocol to a JSON terminal made the gateway read its input frames as
    ttyd's, find none, and forward them all through a step-up hold."""
    client, sid, cookie = env.signed_in("term-tty")
    outputs: list[str] = []

    async def session() -> None:
        async with _terminal(env, cookie, outputs, subprotocols=["tty"]) as (ws, _):
            assert ws.subprotocol is None  # the demo terminal speaks JSON and chose no subprotocol
            r = await asyncio.to_thread(env.gw.admin, "POST", f"/sessions/{sid}/step-up")
            assert r.status_code == 200 and r.json()["state"] == "step_up_required"
            await asyncio.sleep(0.3)
            await ws.send(json.dumps({"type": "input", "data": "tty-canary"}))
            await asyncio.sleep(1.0)
            assert not any("tty-canary" in o for o in outputs)

    asyncio.run(session())
    client.close()


@contextlib.asynccontextmanager
async def _terminal(env: Env, cookie: str, outputs: list[str], **connect):
    """The demo terminal through the gateway, once its banner is in; `outputs` collects the shell's output frames,
    and the reader task ends when the connection does."""
    async with websockets.connect(env.ws_url("/ws/terminal"), open_timeout=10,
                                  additional_headers={"Cookie": f"ztgate_session={cookie}"}, **connect) as ws:
        async def read() -> None:
            async for message in ws:
                outputs.append(json.loads(message).get("data", ""))

        reader = asyncio.create_task(read())
        try:
            await _until_async(lambda: outputs, "the banner")
            yield ws, reader
        finally:
            reader.cancel()


async def _until_async(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------------------------- noVNC


def _novnc_session(env: Env, username: str, canary: bytes, keys: bytes) -> tuple[str, Path]:
    client, sid, cookie = env.signed_in(username)
    before = set(glob.glob(str(env.tmp / "novnc-rec.*")))

    async def session() -> None:
        async with websockets.connect(env.ws_url("/novnc/websockify"), subprotocols=["binary"], open_timeout=10,
                                      additional_headers={"Cookie": f"ztgate_session={cookie}"},
                                      max_size=None) as ws:
            rfb = RfbWebSocketClient(ws)
            await rfb.handshake()
            if username.endswith("restricted"):
                await _until(lambda: env.view(sid)["state"] == "restricted", "the restriction")
            await rfb.send(set_encodings([0]), update_request(False, 0, 0, 32, 32))
            path = [(40 + 9 * i, 40 + 5 * i) for i in range(10)]  # a stroke, then a click at its end
            for i, (x, y) in enumerate(path + [path[-1]] * 2):
                await rfb.send(pointer_event(1 if i == len(path) else 0, x, y))
                await asyncio.sleep(0.03)
            for keysym in keys:
                await rfb.send(key_event(keysym, True))
                await asyncio.sleep(0.05)
                await rfb.send(key_event(keysym, False))
                await asyncio.sleep(0.08)
            await rfb.send(client_cut_text(canary))
            await rfb.send(key_event(0xFF0D, True), key_event(0xFF0D, False))
            await asyncio.sleep(0.5)
            assert rfb.server_bytes > 0
            await rfb.close()

    asyncio.run(session())
    record = wait_until(lambda: [p for p in set(glob.glob(str(env.tmp / "novnc-rec.*"))) - before
                                 if Path(p).read_text().rstrip().endswith("'EOF'];")], timeout=10,
                        what="websockify's record of the session")
    client.close()
    return sid, Path(record[0])


def test_novnc_input_reaches_the_scorer(env):
    if not env.have_vnc:
        pytest.skip("Xvfb, x11vnc and websockify are needed for the noVNC route")
    sid, record = _novnc_session(env, "vnc-plain", b"novnc-clipboard-canary-open", b"hello")
    upstream = count_client_messages(client_stream_from_record(record))
    assessment = wait_until(lambda: (a := _assessment(env, sid)).get("evidence", {}).get("keystrokes", 0) >= 6
                            and a, timeout=10, what="RFB keystrokes at the scorer")
    print(f"\nnoVNC through the gateway: x11vnc (via websockify) got {upstream.key_down} key presses, "
          f"{upstream.pointer} pointer events, {upstream.cut_text} clipboard; scorer evidence "
          f"{assessment['evidence']}")
    assert upstream.key_down == 6 and upstream.pointer == 12 and upstream.cut_text == 1
    assert upstream.cut_bytes == b"novnc-clipboard-canary-open"  # not restricted: the clipboard passes
    assert assessment["evidence"]["keystrokes"] == 6
    assert _pointer_strokes(assessment) >= 1


def test_novnc_clipboard_is_dropped_under_restriction(env):
    if not env.have_vnc:
        pytest.skip("Xvfb, x11vnc and websockify are needed for the noVNC route")
    sid, record = _novnc_session(env, "vnc-restricted", b"novnc-clipboard-canary-blocked", b"abc")
    upstream = count_client_messages(client_stream_from_record(record))
    print(f"\nrestricted noVNC session: upstream got {upstream.key_down} key presses, {upstream.cut_text} "
          "clipboard messages")
    assert upstream.cut_text == 0 and b"canary" not in client_stream_from_record(record)
    assert upstream.key_down == 4  # input still flows around the dropped message, framing intact
    view = env.view(sid)
    assert view["state"] == "restricted"
    assert view["assessment"]["evidence"]["keystrokes"] >= 4


# ---------------------------------------------------------------------------------------------- privacy


def _assert_nothing_typed_stored(env: Env, sids: list[str]) -> None:
    """No keysym, typed character, clipboard text or file name in the gateway's log, its security events, its
    state directory, the admin API's session views, or any Redis key the gateway wrote."""
    import redis

    places: dict[str, str] = {"gateway log": env.gw.proc.log()}
    for path in env.tmp.rglob("*"):
        if path.is_file() and (path.name.startswith(("events-", "outbox")) or "state-" in str(path)):
            places[str(path)] = path.read_bytes().decode("latin-1")
    for sid in sids:
        places[f"admin view {sid}"] = json.dumps(env.view(sid))
    r = redis.Redis.from_url(env.redis.url)
    try:
        for key in r.scan_iter(match=env.prefix + "*", count=500):
            kind = r.type(key).decode()
            value = (r.get(key) if kind == "string" else r.hgetall(key) if kind == "hash" else
                     r.lrange(key, 0, -1) if kind == "list" else r.xrange(key) if kind == "stream" else
                     r.smembers(key) if kind == "set" else r.zrange(key, 0, -1))
            places[f"redis {key!r}"] = repr(value)
    finally:
        r.close()
    assert any(k.startswith("redis") for k in places), "the gateway wrote nothing to Redis?"
    for where, text in places.items():
        for canary in GUAC_CANARIES + OTHER_CANARIES:
            assert canary not in text, f"{canary!r} found in {where}"
        for keysym in KEYSYM_CANARIES:
            assert not re.search(rf"(?<![\w.]){keysym}(?![\w.])", text), f"keysym {keysym} found in {where}"


def test_zz_nothing_typed_is_stored_after_all_sessions(env):
    """Runs last in this module: every session's canaries (Guacamole, terminal paste, noVNC clipboard)."""
    sessions = env.gw.admin("GET", "/sessions").json()["sessions"]
    _assert_nothing_typed_stored(env, [s["sid"] for s in sessions])
