"""`python -m scoring.eval.fast_steady --data ../shared/datasets/aalto-desktop`

Where the automation detector's `fast_steady` floors come from, and what they catch:
- people: every 32-flight window (sliding by one flight, as the detector sees them) of the Aalto training users and,
  as a check, the test users: the fastest window median, the lowest typing CV (pauses left out) among windows under
  70 ms, and the highest `fast_steady` component any window reaches;
- scripts: a fixed-interval script typing lines of a given length, each key delayed by the dispatch jitter of a
  loaded machine, with a wait of 0.4-0.9 s between a line's Enter and the next line (the new field appearing), fed
  through the real feature extraction and detector: the keystroke at which `fast_steady` first reaches 0.5.
Takes about 25 s.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from .. import features as F
from ..detectors.automation import CV_WINDOW, MIN_FLIGHTS, AutomationDetector, fast_steady, typing_cv
from ..population import shipped_population
from ..signals import Evidence
from .aalto import User, load_users, split_users
from .common import SPLIT_SEED, Progress, sentence_keystrokes

SCRIPT_SEED = 0
SCRIPT_RUNS = 100
SCRIPT_KEYS = 200
INTERVAL_MS = 50.0
DWELL_MS = 20.0
LINE_WAIT_MS = (400.0, 900.0)


def human_windows(users: list[User]) -> np.ndarray:
    """(median ms, flight CV, fast_steady) of every 32-flight window of these users' typing."""
    rows = []
    for u in users:
        fl = np.concatenate([sentence_keystrokes(s).flight_ms for s in u.sentences])
        for start in range(0, len(fl) - CV_WINDOW + 1):
            w = fl[start : start + CV_WINDOW]
            med = float(np.median(w))
            if med >= 80.0:  # far from the floor: the component is ~0 whatever the CV
                continue
            cv = typing_cv(w)
            rows.append((med, cv, fast_steady(med, cv)))
    return np.array(rows).reshape(-1, 3)


def script_catch(line_keys: int, jitter_sd_ms: float, rng: np.random.Generator) -> float:
    """Keystrokes until `fast_steady` >= 0.5 for one scripted stream (inf when never within SCRIPT_KEYS)."""
    gaps = np.full(SCRIPT_KEYS, INTERVAL_MS)
    gaps[line_keys::line_keys] = rng.uniform(*LINE_WAIT_MS, len(gaps[line_keys::line_keys]))
    press = np.cumsum(gaps) + np.abs(rng.normal(0.0, jitter_sd_ms, SCRIPT_KEYS))
    press = np.maximum.accumulate(press)  # dispatch keeps order
    cls = rng.integers(1, 8, SCRIPT_KEYS).astype(np.uint8)
    det = AutomationDetector(shipped_population())
    carry = F.new_key_carry()
    empty = F.PointerStrokes(np.empty(0), np.empty(0), np.empty(0), np.empty(0))
    for i in range(SCRIPT_KEYS):  # one key per batch: the earliest moment the detector could say it
        t = np.array([press[i], press[i] + DWELL_MS])
        ks, carry = F.extract_keystrokes(t, np.array([1, 2], np.uint8), np.repeat(cls[i], 2), carry)
        det.update(ks, empty)
        if i + 1 >= MIN_FLIGHTS:
            sig = det.signal(Evidence(i + 1, 1.0, i + 1))
            if sig.details.get("component_fast_steady", 0.0) >= 0.5:
                return float(i + 1)
    return float("inf")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fast_steady", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the aalto-desktop folder")
    args = p.parse_args(argv)
    users = load_users(args.data, progress=Progress("loading"))
    train, test = split_users(users, SPLIT_SEED)
    for name, group in (("training", train), ("test", test)):
        w = human_windows(group)
        under = w[w[:, 0] < 70.0]
        print(f"{name} users ({len(group)}): fastest window median {w[:, 0].min():.1f} ms; {len(under)} windows under "
              f"70 ms, lowest typing CV {under[:, 1].min():.3f} (1% {np.quantile(under[:, 1], 0.01):.3f}); highest "
              f"fast_steady {w[:, 2].max():.3f}")
    rng = np.random.default_rng(SCRIPT_SEED)
    for sd in (5.0, 12.0, 20.0):
        for line in (10, 20, 30, 45):
            at = np.array([script_catch(line, sd, rng) for _ in range(SCRIPT_RUNS)])
            ok = at[np.isfinite(at)]
            print(f"script {INTERVAL_MS:.0f} ms, jitter sd {sd:.0f} ms, lines of {line} keys: caught in "
                  f"{len(ok)}/{SCRIPT_RUNS} within {SCRIPT_KEYS} keys, {np.count_nonzero(ok <= 50)} within 50 "
                  f"(median {np.median(ok) if len(ok) else float('nan'):.0f} keys)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
