"""Recorded sessions: a list of (direction 'C'|'S', t_ms, payload bytes), stored as `<dir> <t> <len>\\n<bytes>\\n`."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
Record = tuple[str, float, bytes]


def dump(records: list[Record], path: Path) -> None:
    with open(path, "wb") as f:
        for direction, t, payload in records:
            f.write(f"{direction} {t:.3f} {len(payload)}\n".encode() + payload + b"\n")


def load(path: Path) -> list[Record]:
    data = Path(path).read_bytes()
    records: list[Record] = []
    pos = 0
    while pos < len(data):
        eol = data.index(b"\n", pos)
        direction, t, length = data[pos:eol].decode().split()
        start = eol + 1
        end = start + int(length)
        records.append((direction, float(t), data[start:end]))
        if data[end : end + 1] != b"\n":
            raise ValueError(f"{path}: record at byte {pos} is not terminated")
        pos = end + 1
    return records
