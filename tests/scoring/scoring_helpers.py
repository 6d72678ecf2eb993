from pathlib import Path

import numpy as np
from scoring.events import Kind, Source, Stimulus, concat, make_batch

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
EPOCH0 = 1.7e12


def typing(n: int, seed: int, t0: float = 0.0, dwell: float = 100.0, flight: float = 170.0, spread: float = 0.4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cls = rng.integers(1, 8, n).astype(np.uint8)
    downs = t0 + np.cumsum(rng.lognormal(np.log(flight), spread, n))
    ups = downs + rng.lognormal(np.log(dwell), 0.25, n)
    b = concat([make_batch(downs, downs + EPOCH0, Kind.KEY_DOWN, key=cls), make_batch(ups, ups + EPOCH0, Kind.KEY_UP, key=cls)])
    return b[np.argsort(b["t_src"], kind="stable")]


def feed(scorer, events, size=50):
    a = None
    for i in range(0, len(events), size):
        a = scorer.update(events[i : i + size])
    return a


