"""Generates the recorded Guacamole and noVNC sessions under fixtures/ (run: python -m tests.capture.make_fixtures).

The recordings are what a browser client and a server would exchange through the gateway: handshake, typing
"hello world" with a typo corrected by backspace, pointer moves, a click, wheel steps, a clipboard paste, a file
upload (Guacamole), syncs and pings, split across frames the way tunnels split them. Next to each recording goes
`<name>.expected.json`: the events the generator *intended* (kind, key class, detail), written from its own
knowledge of what it typed, not from the parser, so that the test compares two independent accounts.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib

from scoring.events import Kind, Probe, Stimulus
from scoring.keys import KeyClass, from_keysym

from .recording import FIXTURES, Record, dump

T0 = 1_700_000_000_000.0
TYPED = "hellp\bo world"  # \b: a backspace correcting the typo
BACKSPACE, RETURN, CTRL_L = 0xFF08, 0xFF0D, 0xFFE3


def keysyms(text: str) -> list[int]:
    return [BACKSPACE if ch == "\b" else ord(ch) for ch in text]


def guac(*elements: str) -> str:
    return ",".join(f"{len(e)}.{e}" for e in elements) + ";"


class Script:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.expected: list[list[int]] = []
        self.t = T0

    def at(self, dt: float) -> float:
        self.t += dt
        return self.t

    def send(self, direction: str, payload: bytes | str, dt: float = 0.0) -> None:
        if isinstance(payload, str):
            payload = payload.encode()
        self.records.append((direction, self.at(dt), payload))

    def expect(self, kind: Kind, key: int = 0, detail: int = 0) -> None:
        self.expected.append([int(kind), int(key), int(detail)])

    def save(self, name: str) -> None:
        dump(self.records, FIXTURES / f"{name}.rec")
        (FIXTURES / f"{name}.expected.json").write_text(json.dumps(self.expected) + "\n")


def guacamole_session() -> Script:
    s = Script()
    sync_ts = [1000]

    def frame(draw: bool = True) -> None:
        """Server draws (maybe) and syncs; the client echoes the sync after rendering."""
        sync_ts[0] += 16
        ops = guac("png", "14", "0", "10", "20", base64.b64encode(b"\x89PNG fake").decode()) if draw else ""
        s.send("S", ops + guac("sync", str(sync_ts[0]), "1"), 3)
        if draw:
            s.expect(Kind.STIMULUS, detail=Stimulus.FRAME)
        s.send("C", guac("sync", str(sync_ts[0])), 25)
        s.expect(Kind.PROBE, detail=Probe.GUAC_SYNC)

    def ping() -> None:
        stamp = str(int(s.t))
        s.send("C", guac("", "ping", stamp), 1)
        s.send("S", guac("", "ping", stamp), 40)
        s.expect(Kind.PROBE, detail=Probe.GUAC_PING)

    s.send("S", guac("", "0f3c1c9e-2b4d-4c1e-9a55-1d2f3a4b5c6d"))
    s.send("S", guac("size", "0", "1024", "768") + guac("rect", "0", "0", "0", "1024", "768")
           + guac("cfill", "14", "0", "255", "255", "255", "255"), 5)
    frame()
    # pointer: moves, a left click, two wheel steps down
    for x, y in ((100, 100), (140, 120), (180, 150)):
        s.send("C", guac("mouse", str(x), str(y), "0"), 16)
        s.expect(Kind.POINTER_MOVE)
    s.send("C", guac("mouse", "180", "150", "1"), 120)
    s.expect(Kind.POINTER_DOWN, detail=1)
    s.send("C", guac("mouse", "180", "150", "0"), 90)
    s.expect(Kind.POINTER_UP)
    for _ in range(2):
        s.send("C", guac("mouse", "180", "150", "16") + guac("mouse", "180", "150", "0"), 60)
        s.expect(Kind.WHEEL, detail=16)
        s.expect(Kind.POINTER_MOVE)  # the wheel "button" lifting is a plain report
    frame()
    ping()
    # typing, one key per frame; every third key split across two frames
    for i, keysym in enumerate(keysyms(TYPED)):
        down = guac("key", str(keysym), "1")
        if i % 3 == 0:
            s.send("C", down[:5], 140)
            s.send("C", down[5:], 1)
        else:
            s.send("C", down, 140)
        s.expect(Kind.KEY_DOWN, key=from_keysym(keysym))
        s.send("C", guac("key", str(keysym), "0"), 70)
        s.expect(Kind.KEY_UP, key=from_keysym(keysym))
        frame()
        if i == 6:
            ping()
    # clipboard paste: the clipboard stream, then Ctrl+V
    s.send("C", guac("clipboard", "0", "text/plain") + guac("blob", "0", base64.b64encode(b"pasted").decode())
           + guac("end", "0"), 400)
    for keysym, pressed in ((CTRL_L, "1"), (ord("v"), "1"), (ord("v"), "0"), (CTRL_L, "0")):
        s.send("C", guac("key", str(keysym), pressed), 60)
        s.expect(Kind.KEY_DOWN if pressed == "1" else Kind.KEY_UP, key=from_keysym(keysym))
    frame()
    # a file upload: stream opened, acknowledged, two blobs, end
    s.send("C", guac("file", "1", "application/octet-stream", "report.txt"), 500)
    s.send("S", guac("ack", "1", "OK", "0"), 30)
    for chunk in (b"first part ", b"second part"):
        s.send("C", guac("blob", "1", base64.b64encode(chunk).decode()), 5)
        s.send("S", guac("ack", "1", "OK", "0"), 30)
    s.send("C", guac("end", "1"), 5)
    # several instructions in one frame, the last split into the next frame
    tail = guac("key", str(RETURN), "1")
    s.send("C", guac("mouse", "200", "160", "0") + tail[:7], 300)
    s.expect(Kind.POINTER_MOVE)
    s.send("C", tail[7:] + guac("key", str(RETURN), "0"), 2)
    s.expect(Kind.KEY_DOWN, key=KeyClass.ENTER)
    s.expect(Kind.KEY_UP, key=KeyClass.ENTER)
    frame()
    frame(draw=False)  # a sync without drawing: a probe but no stimulus
    return s


# -- RFB -------------------------------------------------------------------------------------------------------

PIXEL_FORMAT = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
NOVNC_ENCODINGS = [7, -260, 16, 5, 2, 1, 0, -239, -223, -224, -258, -261, -307, -308, -312, -313, -316,
                   -32 + 6, -256 + 2]


def rect(x: int, y: int, w: int, h: int, encoding: int) -> bytes:
    return struct.pack(">HHHHi", x, y, w, h, encoding)


def compact(n: int) -> bytes:
    out = bytearray([n & 0x7F])
    if n > 0x7F:
        out[0] |= 0x80
        out.append((n >> 7) & 0x7F)
        if n > 0x3FFF:
            out[1] |= 0x80
            out.append(n >> 14)
    return bytes(out)


def update(*rects: bytes) -> bytes:
    return struct.pack(">BxH", 0, len(rects)) + b"".join(rects)


def rfb_session() -> Script:
    s = Script()
    s.send("S", b"RFB 003.008\n")
    s.send("C", b"RFB 003.008\n", 2)
    s.send("S", bytes([2, 2, 1]), 1)  # offers VNC authentication and None
    s.send("C", bytes([2]), 2)
    s.send("S", bytes(range(16)), 1)  # challenge
    s.send("C", bytes(range(100, 116)), 900)  # response (the user typed a password elsewhere)
    s.send("S", struct.pack(">I", 0), 5)
    s.send("C", b"\x01", 1)  # ClientInit, shared
    name = b"ztgate-demo:1"
    s.send("S", struct.pack(">HH", 800, 600) + PIXEL_FORMAT + struct.pack(">I", len(name)) + name, 3)
    # noVNC: pixel format, encodings, first request in one frame
    s.send("C", b"\x00\x00\x00\x00" + PIXEL_FORMAT + struct.pack(">BxH", 2, len(NOVNC_ENCODINGS))
           + struct.pack(f">{len(NOVNC_ENCODINGS)}i", *NOVNC_ENCODINGS)
           + struct.pack(">BBHHHH", 3, 0, 0, 0, 800, 600), 2)
    # the first update: a cursor, a desktop size, a raw strip, a Tight fill, a Tight zlib rect, hextile, copyrect;
    # websockify splits it across frames
    tight_data = zlib.compress(bytes(64 * 32 * 3))
    # hextile, three tiles: background only; raw; two coloured subrectangles
    hextile = (bytes([2]) + b"\x00\x00\xff\x00" + bytes([1]) + bytes(16 * 16 * 4) + bytes([8 | 16, 2])
               + b"\xff\x00\x00\x00" + bytes([0x00, 0x33]) + b"\x00\xff\x00\x00" + bytes([0x44, 0x11]))
    first = update(
        rect(10, 10, 16, 16, -239) + bytes(16 * 16 * 4 + 2 * 16),
        rect(0, 0, 800, 600, -308) + bytes([1, 0, 0, 0]) + struct.pack(">IHHHHI", 0, 0, 0, 800, 600, 0),
        rect(0, 0, 40, 2, 0) + bytes(40 * 2 * 4),
        rect(0, 2, 800, 598, 7) + bytes([0x80]) + b"\x20\x30\x40",
        rect(0, 0, 64, 32, 7) + bytes([0x00]) + compact(len(tight_data)) + tight_data,
        rect(100, 100, 48, 16, 5) + hextile,
        rect(200, 200, 50, 50, 1) + struct.pack(">HH", 0, 0),
    )
    for cut in range(0, len(first), 997):
        s.send("S", first[cut : cut + 997], 1 if cut else 20)
    s.expect(Kind.STIMULUS, detail=Stimulus.FRAME)

    def request_and_update(dt: float = 30) -> None:
        s.send("C", struct.pack(">BBHHHH", 3, 1, 0, 0, 800, 600), 1)
        s.send("S", update(rect(5, 5, 8, 16, 0) + bytes(8 * 16 * 4)), dt)
        s.expect(Kind.STIMULUS, detail=Stimulus.FRAME)

    def pointer(mask: int, x: int, y: int, dt: float = 16) -> None:
        s.send("C", struct.pack(">BBHH", 5, mask, x, y), dt)

    for x, y in ((300, 300), (320, 310), (350, 330)):
        pointer(0, x, y)
        s.expect(Kind.POINTER_MOVE)
    pointer(1, 350, 330, 150)
    s.expect(Kind.POINTER_DOWN, detail=1)
    pointer(0, 350, 330, 80)
    s.expect(Kind.POINTER_UP)
    pointer(16, 350, 330, 100)
    s.expect(Kind.WHEEL, detail=16)
    pointer(0, 350, 330, 1)
    s.expect(Kind.POINTER_MOVE)
    request_and_update()
    for i, keysym in enumerate(keysyms(TYPED)):
        if i % 4 == 3:  # noVNC uses the QEMU extended key event when the server supports it
            s.send("C", struct.pack(">BBHII", 255, 0, 1, keysym, 30 + i), 130)
            s.expect(Kind.KEY_DOWN, key=from_keysym(keysym))
            s.send("C", struct.pack(">BBHII", 255, 0, 0, keysym, 30 + i), 60)
        else:
            msg = struct.pack(">BBxxI", 4, 1, keysym)
            s.send("C", msg[:3], 130)  # a TCP segment boundary inside the message
            s.send("C", msg[3:] + struct.pack(">BBxxI", 4, 0, keysym), 60)
            s.expect(Kind.KEY_DOWN, key=from_keysym(keysym))
        s.expect(Kind.KEY_UP, key=from_keysym(keysym))
        request_and_update()
    # clipboard both ways: the server's copy, then a local paste sent to the server and Ctrl+V
    text = b"remote text"
    s.send("S", struct.pack(">BxxxI", 3, len(text)) + text, 300)
    pasted = b"pasted from the local clipboard"
    s.send("C", struct.pack(">BxxxI", 6, len(pasted)) + pasted[:10], 400)
    s.send("C", pasted[10:], 1)
    for keysym, down in ((CTRL_L, 1), (ord("v"), 1), (ord("v"), 0), (CTRL_L, 0)):
        s.send("C", struct.pack(">BBxxI", 4, down, keysym), 50)
        s.expect(Kind.KEY_DOWN if down else Kind.KEY_UP, key=from_keysym(keysym))
    request_and_update()
    s.send("S", b"\x02", 10)  # Bell
    return s


def main() -> None:
    FIXTURES.mkdir(exist_ok=True)
    guacamole_session().save("guacamole_session")
    rfb_session().save("novnc_session")


if __name__ == "__main__":
    main()
