"""`python -m scoring.eval.anga_target --data ../shared/datasets/aalto-desktop [TARGET ...]`

How freetext.ANGA_TARGET_TRAIN was chosen, on training users only: they are halved (seed 1), the cadence model is fitted
and its alarm level calibrated on one half at each target ANGA, and the other half's genuine streams and splices
give the ANGA and ANIA that level really reaches on people it has not seen; both directions are pooled. The shipped
target is the lowest whose pooled ANGA is >= 20,000. Takes a few minutes per target.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import freetext as ft
from .aalto import load_users, split_users
from .common import SPLIT_SEED, Progress

HALVES_SEED = 1


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="anga_target", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the aalto-desktop folder")
    p.add_argument("targets", nargs="*", type=float, default=[25_000.0, 30_000.0, 40_000.0])
    args = p.parse_args(argv)
    users = [u for u in load_users(args.data, progress=Progress("loading")) if len(u.sentences) > ft.ENROL_SENTENCES + 1]
    train, _ = split_users(users, SPLIT_SEED)
    order = np.random.default_rng(HALVES_SEED).permutation(len(train))
    halves = [[train[i] for i in order[: len(order) // 2]], [train[i] for i in order[len(order) // 2 :]]]
    pooled = {t: {"fa": 0, "keys": 0, "delay_sum": 0.0, "detected": 0, "trials": 0} for t in args.targets}
    for a in (0, 1):
        fit_half, other = halves[a], halves[1 - a]
        prior, calibration, _ = ft.fit_cadence(fit_half)
        prepared = ft.prepare(other, prior)
        for target in args.targets:
            h = ft.calibrate_alarm(calibration, prior, prior.decay, target)
            fa, keys = ft.false_alarm_count(prepared, h, prior, prior.decay)
            trial = ft.splice_trials(prepared, h, prior, prior.decay, ft.TRIAL_SEED)
            agg = pooled[target]
            agg["fa"] += fa
            agg["keys"] += keys
            agg["delay_sum"] += (trial["ania_mean_keystrokes"] or 0.0) * trial["detected"]
            agg["detected"] += trial["detected"]
            agg["trials"] += trial["trials"]
            print(f"fitted on half {a}, target {target:.0f}: level {h:.2f}, other half {fa} false alarms in {keys} "
                  f"keystrokes, ANIA {trial['ania_mean_keystrokes'] or float('nan'):.1f}", flush=True)
    for target, agg in pooled.items():
        anga = agg["keys"] / agg["fa"] if agg["fa"] else float("inf")
        ania = agg["delay_sum"] / agg["detected"] if agg["detected"] else float("nan")
        print(f"target {target:.0f}: pooled ANGA {anga:.0f} ({agg['fa']} false alarms), ANIA {ania:.1f}, "
              f"detected {agg['detected']}/{agg['trials']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
