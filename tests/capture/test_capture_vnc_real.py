"""A real VNC round trip: vncdotool (client) -> our relay (feeds RfbParser both ways) -> x11vnc on Xvfb.

This proves the parser against a real server and client without mitmproxy; the gateway-level test lives with the
proxy. The relay is a plain select() loop in a thread: it forwards what the parser says to forward.
"""

import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gateway.capture import RfbParser
from scoring.events import Kind, Stimulus
from scoring.keys import KeyClass

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("x11vnc")),
                                                   reason="Xvfb and x11vnc are needed for the real VNC test")]
VNCDO = Path(sys.executable).parent / "vncdo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


class Relay(threading.Thread):
    def __init__(self, upstream_port: int) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream_port = upstream_port
        self.parser = RfbParser()
        self.events: list[np.ndarray] = []
        self.results = []
        self.stop = False

    def run(self) -> None:
        self.listener.settimeout(10)
        client, _ = self.listener.accept()
        server = socket.create_connection(("127.0.0.1", self.upstream_port))
        peers = {client: server, server: client}
        try:
            while not self.stop:
                ready, _, _ = select.select([client, server], [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    t = time.time() * 1000.0
                    feed = self.parser.feed_client if sock is client else self.parser.feed_server
                    r = feed(data, t)
                    self.events.append(r.events)
                    self.results.append((sock is client, r.opaque, r.reason))
                    if r.forward:
                        peers[sock].sendall(r.forward)
        finally:
            client.close()
            server.close()
            self.listener.close()


@pytest.fixture
def vnc_server():
    display = f":{50 + os.getpid() % 40}"
    port = free_port()
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    x11vnc = None
    try:
        time.sleep(0.5)
        x11vnc = subprocess.Popen(["x11vnc", "-display", display, "-rfbport", str(port), "-nopw", "-forever",
                                   "-shared", "-localhost", "-quiet"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        yield port
    finally:
        for proc in (x11vnc, xvfb):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()


def test_real_vnc_session_through_the_parser(vnc_server, tmp_path):
    shot = tmp_path / "screen.png"
    relay = Relay(vnc_server)
    relay.start()
    # vncdo runs in its own process: its Twisted reactor cannot be restarted inside the test process
    subprocess.run([str(VNCDO), "-s", f"127.0.0.1::{relay.port}", "--delay", "50",
                    "move", "100", "120", "click", "1", "type", "hi", "key", "bsp", "key", "enter",
                    "capture", str(shot)],
                   check=True, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relay.stop = True
    relay.join(10)
    events = np.concatenate(relay.events)
    assert not relay.parser.opaque, relay.parser.reason  # x11vnc's real updates were delimited too
    keys = [(int(e["kind"]), int(e["key"])) for e in events if e["kind"] in (Kind.KEY_DOWN, Kind.KEY_UP)]
    downs = [k for kind, k in keys if kind == Kind.KEY_DOWN]
    assert downs == [KeyClass.RIGHT_HOME, KeyClass.RIGHT_TOP, KeyClass.BACKSPACE, KeyClass.ENTER]
    assert len(keys) == 8
    pointer = events[np.isin(events["kind"], [Kind.POINTER_MOVE, Kind.POINTER_DOWN, Kind.POINTER_UP])]
    assert Kind.POINTER_DOWN in pointer["kind"] and Kind.POINTER_UP in pointer["kind"]
    down = pointer[pointer["kind"] == Kind.POINTER_DOWN][0]
    assert (down["x"], down["y"], down["detail"]) == (100, 120, 1)
    frames = events[(events["kind"] == Kind.STIMULUS) & (events["detail"] == Stimulus.FRAME)]
    assert len(frames) >= 1  # the captured screen arrived as at least one update
