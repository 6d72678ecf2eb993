"""Balabit Mouse Dynamics Challenge loader: genuine pointer behaviour captured from RDP sessions.

Each session file is a gzip CSV of `record timestamp, client timestamp, button, state, x, y` (seconds). Only the
client clock is used (the record clock shows the RDP channel's ~100 ms batching, not the person). The evaluation
uses the pointer's *click actions*: the samples of one approach to a target ending in a left-button press.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import features as F

MAX_ACTION_MS = 4000.0  # an approach longer than this is not one movement to one target
ACTION_GAP_MS = 1000.0  # a pause this long between samples starts a new approach


@dataclass(frozen=True, slots=True)
class ClickAction:
    """One approach to a target: move samples (ms relative to the press) and the press itself at t = 0."""

    t: np.ndarray  # ms, last value 0.0 is the press
    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True, slots=True)
class PointerUser:
    uid: str
    train: list[ClickAction]  # from training_files: enrolment / population
    test: list[ClickAction]  # from test_files sessions labelled legal (the user's own)


_CODES = {("Left", "Pressed"): "1", ("NoButton", "Move"): "2", ("NoButton", "Drag"): "2"}
_PAIR = re.compile(r",([A-Za-z]+),([A-Za-z]+),")


def _read(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with gzip.open(path, "rt", newline="") as fh:
        text = fh.read()
    body = text.split("\n", 1)[1] if "\n" in text else ""
    # button/state become one number so the whole file parses in numpy's C reader
    numeric = _PAIR.sub(lambda m: "," + _CODES.get((m.group(1), m.group(2)), "0") + ",", body)
    if not numeric.strip():
        return np.empty(0), np.empty(0), np.empty(0), np.empty(0, dtype=bool)
    a = np.loadtxt(io.StringIO(numeric), delimiter=",", ndmin=2)
    t, code, x, y = a[:, 1] * 1000.0, a[:, 2], a[:, 3], a[:, 4]
    keep = code > 0
    return t[keep], x[keep], y[keep], code[keep] == 1


def click_actions(t: np.ndarray, x: np.ndarray, y: np.ndarray, press: np.ndarray) -> list[ClickAction]:
    out = []
    start = 0
    for i in np.flatnonzero(press):
        j = i
        while j > start and not press[j - 1] and t[j] - t[j - 1] < ACTION_GAP_MS and t[i] - t[j - 1] <= MAX_ACTION_MS:
            j -= 1
        start = i + 1
        if i - j >= F.MIN_STROKE_POINTS:
            rel = t[j : i + 1] - t[i]
            if np.all(np.diff(rel) >= 0):
                out.append(ClickAction(rel, x[j : i + 1].copy(), y[j : i + 1].copy()))
    return out


def load_users(root: str | Path, max_sessions: int = 40) -> list[PointerUser]:
    root = Path(root)
    if not (root / "training_files").is_dir():
        raise FileNotFoundError(f"no such file or directory: {root / 'training_files'}")
    legal: set[str] = set()
    labels = root / "public_labels.csv"
    if labels.exists():
        with labels.open() as fh:
            legal = {r["filename"] for r in csv.DictReader(fh) if r["is_illegal"] == "0"}
    users = []
    for udir in sorted((root / "training_files").iterdir()):
        train = [a for f in sorted(udir.glob("session_*"))[:max_sessions] for a in click_actions(*_read(f))]
        test_dir = root / "test_files" / udir.name
        files = [f for f in sorted(test_dir.glob("session_*")) if f.name.split(".")[0] in legal] if test_dir.is_dir() else []
        test = [a for f in files[:max_sessions] for a in click_actions(*_read(f))]
        users.append(PointerUser(udir.name, train, test))
    return users
