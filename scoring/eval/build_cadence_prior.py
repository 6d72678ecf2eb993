"""`python -m scoring.eval.build_cadence_prior --data ../shared/datasets/aalto-desktop --out scoring/data/cadence_prior.npz`

Fits the cadence prior, decay and alarm level on the Aalto training users (the same split and code as
`ztgate eval freetext`, so no test user is ever seen) and writes the file the package ships.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .aalto import load_users, split_users
from .common import SPLIT_SEED, Progress
from .freetext import ENROL_SENTENCES, fit_cadence


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="build_cadence_prior", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the aalto-desktop folder")
    p.add_argument("--out", required=True, help="where to write the prior (.npz)")
    args = p.parse_args(argv)
    if not Path(args.data).exists():
        print(f"build_cadence_prior: --data {args.data}: no such file or directory", file=sys.stderr)
        return 2
    users = [u for u in load_users(args.data, progress=Progress("loading")) if len(u.sentences) > ENROL_SENTENCES + 1]
    train, _ = split_users(users, SPLIT_SEED)
    prior, _, info = fit_cadence(train)
    Path(args.out).write_bytes(prior.to_npz())
    print(f"wrote {args.out}: {len(train)} training users, decay {prior.decay}, alarm {prior.alarm:.2f}; {info}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
