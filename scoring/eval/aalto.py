"""Loader for the Aalto desktop keystroke folder format (offline evaluation only).

Characters are read only to be reduced to key classes right here (KEYCODE -> KeyClass); the LETTER, SENTENCE and
USER_INPUT columns are never kept.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..events import EVENT_DTYPE, Kind, Source, concat, make_batch
from ..keys import from_aalto_keycode

# Unix ms at the start of the Aalto collection: used to place arrival times in the epoch range
_KEYCODE_CLASS = np.array([from_aalto_keycode(k) for k in range(256)], dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class Sentence:
    press: np.ndarray  # ms
    release: np.ndarray
    cls: np.ndarray  # KeyClass


@dataclass(frozen=True, slots=True)
class User:
    uid: int
    sentences: list[Sentence]

    @property
    def keystrokes(self) -> int:
        return sum(len(s.press) for s in self.sentences)


def user_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    if (folder / "keystrokes").is_dir():
        folder = folder / "keystrokes"
    files = sorted(folder.glob("*_keystrokes.txt*"), key=lambda p: int(p.name.split("_")[0]))
    if not files:
        raise FileNotFoundError(f"no *_keystrokes.txt[.gz] files under {folder}")
    return files


def load_user(path: Path) -> User | None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        text = io.TextIOWrapper(fh, encoding="latin-1", newline="")
        reader = csv.reader(text, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            return None
        col = {name: i for i, name in enumerate(header)}
        i_sec, i_p, i_r, i_k = col["TEST_SECTION_ID"], col["PRESS_TIME"], col["RELEASE_TIME"], col["KEYCODE"]
        width = len(header)
        sections, press, release, codes = [], [], [], []
        for row in reader:
            if len(row) != width:
                continue  # a malformed row (stray tab in a sentence): skipped, not guessed
            try:
                sections.append(int(row[i_sec]))
                press.append(float(row[i_p]))
                release.append(float(row[i_r]))
                codes.append(int(row[i_k]))
            except ValueError:
                continue
    if not press:
        return None
    sec = np.array(sections)
    p = np.array(press)
    r = np.array(release)
    k = np.clip(np.array(codes), 0, 255)
    cls = _KEYCODE_CLASS[k]
    sentences = []
    for s in dict.fromkeys(sec.tolist()):  # sentence order as typed
        m = sec == s
        order = np.argsort(p[m], kind="stable")
        ok = np.isfinite(p[m][order]) & np.isfinite(r[m][order])
        sentences.append(Sentence(p[m][order][ok], r[m][order][ok], cls[m][order][ok]))
    return User(int(path.name.split("_")[0]), sentences)


def load_users(folder: Path, limit: int | None = None, progress=None) -> list[User]:
    files = user_files(folder)
    if limit is not None:
        files = files[:limit]
    users = []
    for i, f in enumerate(files):
        u = load_user(f)
        if u is not None and len(u.sentences) >= 2:
            users.append(u)
        if progress is not None:
            progress(i + 1, len(files))
    return users


def split_users(users: list[User], seed: int, train_fraction: float = 0.5) -> tuple[list[User], list[User]]:
    """A fixed, seeded split by user: nothing tuned on the training half ever sees a test user."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(users))
    n_train = int(round(train_fraction * len(users)))
    train = [users[i] for i in sorted(order[:n_train])]
    test = [users[i] for i in sorted(order[n_train:])]
    return train, test


def sentence_events(s: Sentence, t0: float = 1.5e12) -> np.ndarray:
    """Key down/up events of one sentence (sensor source, arrival = source time shifted into the epoch)."""
    down = make_batch(s.press, s.press + t0 - s.press[0] if len(s.press) else 0.0, Kind.KEY_DOWN, key=s.cls, source=Source.SENSOR)
    up = make_batch(s.release, s.release + t0 - s.press[0] if len(s.press) else 0.0, Kind.KEY_UP, key=s.cls, source=Source.SENSOR)
    b = concat([down, up])
    return b[np.argsort(b["t_src"], kind="stable")] if len(b) else np.zeros(0, dtype=EVENT_DTYPE)
