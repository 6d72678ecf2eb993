"""Aalto 136M-keystrokes (desktop subset) as replayable human typing for the scenario harness.

A participant is 15 transcribed sentences; each sentence becomes a sequence of `Keystroke` (press and release in ms
from the sentence's first press, JavaScript keyCode) plus, kept apart, the characters the dataset logged. We replay
the *timing*; the characters (public dataset text, nobody's secret) only serve to make real text appear in a browser
field. They live in memory for the duration of a run and never go into reports: dataclass reprs hide them and
`Sentence.describe()` gives the loggable summary.

Dataset: Dhakal, Feit, Kristensson & Oulasvirta, "Observations on Typing from 136 Million Keystrokes", CHI 2018
(non-commercial use with attribution). Read from ../shared/datasets/aalto-desktop; never copied into the repo.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path

from .keymap import SHIFT_CODES, spec_for_logged
from .plan import PlannedStroke, TypingPlan

DEFAULT_ROOT = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "aalto-desktop"

_COLUMNS = ("TEST_SECTION_ID", "PRESS_TIME", "RELEASE_TIME", "LETTER", "KEYCODE")


class DatasetError(ValueError):
    """The dataset is missing or a file does not have the documented layout."""


@dataclass(frozen=True, slots=True)
class Keystroke:
    press_ms: int  # from the sentence's first press
    release_ms: int
    keycode: int  # JavaScript legacy keyCode as logged


@dataclass(frozen=True, slots=True)
class Sentence:
    participant: str
    section_id: int
    keystrokes: tuple[Keystroke, ...]
    # What the dataset logged per keystroke ("BKSP", "SHIFT", "a", "" ...), parallel to `keystrokes`, and the text
    # the participant submitted. Characters: in-memory only, never printed (repr=False).
    letters: tuple[str, ...] = field(repr=False)
    submitted: str = field(repr=False)
    clamped_releases: int = 0  # rows whose release preceded the press (dataset glitch), clamped to the press

    @property
    def duration_ms(self) -> int:
        return max(k.release_ms for k in self.keystrokes) if self.keystrokes else 0

    def describe(self) -> dict[str, int | str]:
        """Loggable summary: identifiers and timing only."""
        return {
            "participant": self.participant,
            "section_id": self.section_id,
            "keystrokes": len(self.keystrokes),
            "duration_ms": self.duration_ms,
        }


@dataclass(frozen=True, slots=True)
class Participant:
    participant: str
    sentences: tuple[Sentence, ...]  # in the order they were typed


@dataclass(frozen=True, slots=True)
class UserSplit:
    """One user's data divided for a scenario: enrol on the first sentences, test on the rest."""

    participant: str
    enrolment: tuple[Sentence, ...]
    test: tuple[Sentence, ...]


def participant_ids(root: Path = DEFAULT_ROOT) -> list[str]:
    """All participant ids available under `root`, sorted (as strings, the file-name order)."""
    folder = Path(root) / "keystrokes"
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a directory (expected the aalto-desktop dataset's keystrokes/ folder)")
    suffix = "_keystrokes.txt.gz"
    return sorted(p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}"))


def select_participants(n: int, seed: int, root: Path = DEFAULT_ROOT, *, min_sentences: int = 15) -> list[str]:
    """`n` participant ids chosen deterministically by `seed`, each with at least `min_sentences` sentences."""
    ids = participant_ids(root)
    order = random.Random(seed).sample(ids, len(ids))
    chosen: list[str] = []
    for pid in order:
        if len(load_participant(pid, root).sentences) >= min_sentences:
            chosen.append(pid)
            if len(chosen) == n:
                return chosen
    raise DatasetError(f"only {len(chosen)} participants with >= {min_sentences} sentences, {n} requested")


def load_participant(participant: str, root: Path = DEFAULT_ROOT) -> Participant:
    import pandas as pd  # heavy import, only where the data is read

    path = Path(root) / "keystrokes" / f"{participant}_keystrokes.txt.gz"
    if not path.is_file():
        raise DatasetError(f"{path}: no such participant file")
    try:
        frame = pd.read_csv(
            path,
            sep="\t",
            quoting=csv.QUOTE_NONE,
            encoding="latin-1",
            keep_default_na=False,  # LETTER "" and "NA"-like strings stay strings
            dtype={"LETTER": str, "USER_INPUT": str},
        )
    except Exception as exc:  # pandas raises a zoo of parser errors
        raise DatasetError(f"{path}: cannot parse as the aalto tab-separated layout: {exc}") from exc
    missing = [c for c in (*_COLUMNS, "USER_INPUT") if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing}")

    sentences = []
    for section_id, rows in frame.groupby("TEST_SECTION_ID", sort=False):
        rows = rows.sort_values("PRESS_TIME", kind="stable")
        press = rows["PRESS_TIME"].to_numpy(dtype="int64")
        release = rows["RELEASE_TIME"].to_numpy(dtype="int64")
        clamped = int((release < press).sum())
        release = release.clip(min=press)
        start = int(press[0])
        strokes = tuple(
            Keystroke(int(p - start), int(r - start), int(k))
            for p, r, k in zip(press, release, rows["KEYCODE"].to_numpy(dtype="int64"), strict=True)
        )
        sentences.append(
            Sentence(
                participant=str(participant),
                section_id=int(section_id),
                keystrokes=strokes,
                letters=tuple(rows["LETTER"].tolist()),
                submitted=str(rows["USER_INPUT"].iloc[0]),
                clamped_releases=clamped,
            )
        )
    # typing order: by each sentence's absolute first press (the relative times above no longer carry it)
    first_press = frame.groupby("TEST_SECTION_ID", sort=False)["PRESS_TIME"].min().to_dict()
    sentences.sort(key=lambda s: first_press[s.section_id])
    return Participant(str(participant), tuple(sentences))


def split_user(participant: Participant, enrol_sentences: int) -> UserSplit:
    """First `enrol_sentences` sentences (typing order) for enrolment, the rest for testing."""
    if not 0 < enrol_sentences < len(participant.sentences):
        raise ValueError(
            f"enrol_sentences must be in 1..{len(participant.sentences) - 1} for participant "
            f"{participant.participant}, got {enrol_sentences}"
        )
    return UserSplit(
        participant.participant,
        participant.sentences[:enrol_sentences],
        participant.sentences[enrol_sentences:],
    )


def load_splits(n: int, seed: int, enrol_sentences: int = 5, root: Path = DEFAULT_ROOT) -> list[UserSplit]:
    """The usual scenario population: `n` seeded participants, each split into enrolment and test sentences."""
    return [split_user(load_participant(pid, root), enrol_sentences) for pid in select_participants(n, seed, root)]


def typing_plan(sentence: Sentence, *, max_keys: int | None = None, max_gap_ms: float | None = None) -> TypingPlan:
    """A sentence's recorded timing as a browser typing plan.

    Each keystroke keeps its recorded press/release offsets; `max_keys` keeps only the first keystrokes (short
    browser tests), `max_gap_ms` shortens long pauses (a participant reading the next sentence) to that gap while
    keeping every dwell. The characters come from the LETTER column (or keyCode and the Shift/CapsLock state when
    it is empty), so the field ends up holding what the participant's field held, modulo keys the editor model
    does not know (see `plan.field_values`).
    """
    strokes = sentence.keystrokes[:max_keys] if max_keys is not None else sentence.keystrokes
    letters = sentence.letters[: len(strokes)]
    releases_of_shift: list[int] = []  # release times of Shift strokes seen so far
    caps = False
    planned = []
    removed = 0.0  # pause time cut so far
    previous_press: int | None = None
    for stroke, letter in zip(strokes, letters, strict=True):
        if max_gap_ms is not None and previous_press is not None:
            removed += max(0.0, stroke.press_ms - previous_press - max_gap_ms)
        previous_press = stroke.press_ms
        shifted = any(r > stroke.press_ms for r in releases_of_shift)
        spec = spec_for_logged(stroke.keycode, letter, shifted=shifted, caps=caps)
        if spec.code in SHIFT_CODES:
            releases_of_shift.append(stroke.release_ms)
        if spec.code == "CapsLock":
            caps = not caps
        planned.append(PlannedStroke(stroke.press_ms - removed, stroke.release_ms - removed, spec))
    return TypingPlan(tuple(planned), origin=f"aalto:{sentence.participant}/{sentence.section_id}")


def reproduces_submission(sentence: Sentence) -> bool:
    """Whether replaying the whole sentence in a plain text field yields the text the participant submitted."""
    return typing_plan(sentence).expected_text == sentence.submitted
