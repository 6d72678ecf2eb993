"""Session state from outside (a peer, a file): any blob either decodes within its own size or is a ValueError."""

import json
import struct
import tracemalloc

import pytest

import scoring
from scoring import statecodec
from scoring.scorer import STATE_VERSION
from scoring_helpers import feed, typing


def _blob(header, body: bytes = b"") -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<4sHI", b"ZTSS", STATE_VERSION, len(h)) + h + body


@pytest.mark.parametrize(
    "blob",
    [
        _blob([]),
        _blob("text"),
        _blob({"scalars": [["<f8"], [1], 0, 8]}, b"\0" * 8),  # unhashable dtype
        _blob({"scalars": ["<f8", [1], 0]}, b"\0" * 8),
        _blob({"scalars": "abcd"}, b"\0" * 8),
        _blob({"scalars": ["<f8", [2**70], 0, 8]}, b"\0" * 8),
        _blob({"scalars": ["<f8", "ab", 0, 8]}, b"\0" * 8),
        _blob({"scalars": ["<f8", [1.5], 0, 8]}, b"\0" * 8),
        _blob({"scalars": ["<f8", [True], 0, 8]}, b"\0" * 8),
        _blob({"scalars": ["<f8", [1], -8, 8]}, b"\0" * 8),
        _blob({"scalars": ["<f8", [1], 0, 9]}, b"\0" * 9),
        _blob({"scalars": ["<f8", [1, 1, 1, 1, 1, 1, 1, 1, 1], 0, 8]}, b"\0" * 8),
        _blob({"a": ["<f8", [1], 0, 8], "b": ["<f8", [1], 0, 8]}, b"\0" * 8),  # overlapping
        _blob({"a": ["<f8", [1], 0, 8]}, b"\0" * 16),  # a gap / trailing bytes
        _blob({"a": ["<f8", [2], 0, 16]}, b"\0" * 8),  # past the end
        _blob(b"[" * 100_000 + b"]" * 100_000),
        _blob(b"\xff\xfe"),
        struct.pack("<4sHI", b"ZTSS", STATE_VERSION, 10**6) + b"{}",
    ],
)
def test_hostile_blobs_are_value_errors(blob):
    with pytest.raises(ValueError):
        scoring.SessionScorer.from_bytes(blob, None)


def test_many_names_for_one_range_do_not_amplify():
    body = b"\0" * (1 << 20)
    header = {f"x{i}": ["|u1", [1 << 20], 0, 1 << 20] for i in range(2000)}
    tracemalloc.start()
    try:
        with pytest.raises(ValueError):
            statecodec.decode(_blob(header, body), STATE_VERSION)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * len(body)  # was ~2 GiB


def test_real_states_still_roundtrip():
    s = scoring.SessionScorer(None)
    feed(s, typing(500, seed=4, t0=1e6))
    state = s.to_bytes()
    back = scoring.SessionScorer.from_bytes(state, None)
    assert back.to_bytes() == state
    empty = statecodec.encode({"a": statecodec.np.zeros(0), "b": statecodec.np.arange(3)}, 1)
    out = statecodec.decode(empty, 1)
    assert out["a"].shape == (0,) and out["b"].tolist() == [0, 1, 2]
