import numpy as np
import pytest

from gateway.sensor.integrity import IntegrityConfig, SensorIntegrity
from scoring.events import Kind, concat, make_batch
from scoring.signals import Signal

T0 = 1_763_700_000.0  # gateway seconds
S0 = T0 * 1000.0  # source ms


def keys(n, start_ms=S0, interval_ms=150.0):
    t = start_ms + np.arange(n) * interval_ms
    return concat([make_batch(t, 0, Kind.KEY_DOWN, key=1), make_batch(t + 80, 0, Kind.KEY_UP, key=1)])


def moves(n, start_ms=S0, interval_ms=16.0):
    return make_batch(start_ms + np.arange(n) * interval_ms, 0, Kind.POINTER_MOVE, x=1, y=1)


def no_events():
    return make_batch([], 0, Kind.KEY_DOWN)


def test_nothing_seen_is_not_sufficient():
    s = SensorIntegrity().signal(T0)
    assert isinstance(s, Signal) and s.name == "sensor"
    assert not s.sufficient and s.score == 0.0


def test_normal_session_scores_zero():
    integ = SensorIntegrity()
    integ.page_served("p1", T0)
    integ.batch("p1", 1, keys(20), T0 + 1, time_origin=S0)
    integ.batch("p1", 2, moves(30), T0 + 2, time_origin=S0)
    integ.pong("p1", T0 + 5)
    integ.submission("p1", 2, T0 + 6)
    for i in range(20):
        integ.request(T0 + 6 + i)
    integ.pong("p1", T0 + 20)
    s = integ.signal(T0 + 30)
    assert s.sufficient and s.score == 0.0
    assert "normally" in s.explanation
    assert s.evidence.keystrokes == 20 and s.evidence.samples == 4
    assert s.details["pages_heard"] == 1 and s.details["typed_without_keys"] == 0


def test_typed_text_without_keystrokes():
    integ = SensorIntegrity()
    integ.page_served("p1", T0)
    integ.batch("p1", 1, moves(10), T0 + 1)
    integ.submission("p1", 3, T0 + 5)
    assert integ.signal(T0 + 5.5).details["typed_without_keys"] == 0  # still in the grace period
    s = integ.signal(T0 + 8)
    assert s.details["typed_without_keys"] == 1
    assert s.score > 0.3 and "typed text" in s.explanation
    integ.submission("p1", 1, T0 + 9)
    assert integ.signal(T0 + 12).score > s.score


def test_keys_arriving_just_after_the_submission_count():
    integ = SensorIntegrity()
    integ.page_served("p1", T0)
    integ.submission("p1", 1, T0 + 5)
    integ.batch("p1", 1, keys(5), T0 + 5.3)  # the pagehide beacon overtaken by the form post
    assert integ.signal(T0 + 10).details["typed_without_keys"] == 0


def test_submission_without_typed_fields_or_page():
    integ = SensorIntegrity()
    integ.page_served("p1", T0)
    integ.submission("p1", 0, T0 + 1)  # only hidden fields / checkboxes
    integ.batch("p1", 1, keys(3), T0 + 2)
    integ.submission(None, 2, T0 + 3)  # an API call: keys were typed in this session recently
    assert integ.signal(T0 + 10).details["typed_without_keys"] == 0
    integ.submission(None, 2, T0 + 1000)  # long after the last key
    assert integ.signal(T0 + 1010).details["typed_without_keys"] == 1


def test_sensor_never_speaks_while_requests_continue():
    integ = SensorIntegrity(IntegrityConfig(silent_after_s=30))
    integ.page_served("p1", T0)
    integ.request(T0 + 10)
    assert integ.signal(T0 + 10).score == 0.0
    integ.request(T0 + 31)
    integ.request(T0 + 50)
    s = integ.signal(T0 + 50)
    assert s.details["silent_episodes"] == 1 and s.details["silent_seconds"] == pytest.approx(20)
    assert s.score >= 0.5 and "silent" in s.explanation


def test_sensor_going_quiet_later_and_recovering():
    integ = SensorIntegrity(IntegrityConfig(silent_after_s=30))
    integ.page_served("p1", T0)
    integ.pong("p1", T0 + 1)
    integ.request(T0 + 20)  # within the window: fine
    assert integ.signal(T0 + 20).details["silent_episodes"] == 0
    integ.request(T0 + 40)
    integ.pong("p1", T0 + 45)  # back: the episode ends
    integ.request(T0 + 50)
    s = integ.signal(T0 + 50)
    assert s.details["silent_episodes"] == 1 and s.details["silent_seconds"] == pytest.approx(14)


def test_no_requests_no_silence():
    integ = SensorIntegrity()
    integ.page_served("p1", T0)
    assert integ.signal(T0 + 1000).details["silent_episodes"] == 0  # an idle user in another tab


def test_sequence_replays_gaps_and_reordering():
    integ = SensorIntegrity()
    integ.page_served("p1", T0)
    integ.batch("p1", 1, no_events(), T0, time_origin=S0)
    integ.batch("p1", 2, no_events(), T0, time_origin=S0)
    integ.batch("p1", 2, keys(5), T0, time_origin=S0)  # replay: its keys do not count
    s = integ.signal(T0)
    assert s.details["seq_replays"] == 1 and s.details["keys"] == 0 and s.score >= 0.7
    integ.batch("p1", 6, no_events(), T0, time_origin=S0)  # 3, 4, 5 missing
    assert integ.signal(T0).details["seq_gaps"] == 3
    integ.batch("p1", 4, no_events(), T0, time_origin=S0)  # late (a beacon racing the socket): a gap filled
    s = integ.signal(T0)
    assert s.details["seq_gaps"] == 2 and s.details["seq_late"] == 1 and s.details["seq_replays"] == 1
    integ.batch("p1", 4, no_events(), T0, time_origin=S0)
    assert integ.signal(T0).details["seq_replays"] == 2


def test_a_forged_sequence_jump_costs_nothing_and_still_counts_as_a_gap():
    # s may be up to 2**53: the window once shifted its bitmap by the jump (seconds and gigabytes for 2**31)
    integ = SensorIntegrity()
    integ.page_served("p1", T0)
    integ.batch("p1", 1, no_events(), T0, time_origin=S0)
    integ.batch("p1", 2**53 - 1, no_events(), T0, time_origin=S0)
    s = integ.signal(T0)
    assert s.details["seq_gaps"] == 1_000_000 and s.score > 0
    integ.batch("p1", 2**53 - 3, no_events(), T0, time_origin=S0)  # just below the new highest: late, not lost
    assert integ.signal(T0).details["seq_late"] == 1


def test_same_page_reloaded_from_cache_is_not_a_replay():
    integ = SensorIntegrity()
    integ.batch("p1", 1, no_events(), T0, time_origin=S0)
    integ.batch("p1", 2, no_events(), T0, time_origin=S0)
    integ.batch("p1", 1, no_events(), T0 + 60, time_origin=S0 + 60_000)  # a new document, same token
    s = integ.signal(T0 + 60)
    assert s.details["seq_replays"] == 0 and s.score == 0.0


def test_very_old_sequence_number_is_a_replay():
    integ = SensorIntegrity(IntegrityConfig(seq_window=8))
    for seq in range(1, 21):
        integ.batch("p1", seq, no_events(), T0)
    integ.batch("p1", 3, no_events(), T0)
    assert integ.signal(T0).details["seq_replays"] == 1


def test_inhuman_key_rate():
    integ = SensorIntegrity()
    integ.batch("p1", 1, keys(60, interval_ms=100), T0)  # 10/s for 6 s: a fast typist
    assert integ.signal(T0).details["key_rate_episodes"] == 0
    integ.batch("p1", 2, keys(200, start_ms=S0 + 10_000, interval_ms=20), T0 + 10)  # 50/s for 4 s
    s = integ.signal(T0 + 10)
    assert s.details["key_rate_episodes"] == 1 and s.details["peak_keys_per_s"] >= 45
    assert s.score >= 0.9 and "key presses" in s.explanation


def test_key_rate_burst_split_across_batches_counts_once():
    integ = SensorIntegrity()
    for i in range(8):
        integ.batch("p1", i + 1, keys(25, start_ms=S0 + i * 500, interval_ms=20), T0 + i * 0.5)
    assert integ.signal(T0 + 5).details["key_rate_episodes"] == 1


def test_short_burst_is_not_sustained():
    integ = SensorIntegrity()
    integ.batch("p1", 1, keys(20, interval_ms=20), T0)  # 50/s but only for 0.4 s (a rollover chord)
    assert integ.signal(T0).details["key_rate_episodes"] == 0


def test_inhuman_pointer_rate():
    integ = SensorIntegrity()
    integ.batch("p1", 1, moves(200, interval_ms=15), T0)  # what the sensor sends at most
    assert integ.signal(T0).details["pointer_rate_episodes"] == 0
    integ.batch("p1", 2, moves(2000, start_ms=S0 + 10_000, interval_ms=1), T0 + 10)
    s = integ.signal(T0 + 10)
    assert s.details["pointer_rate_episodes"] == 1 and s.score >= 0.8


def test_tokens_rejected():
    integ = SensorIntegrity()
    integ.token_rejected("expired", T0)
    weak = integ.signal(T0)
    assert weak.sufficient and 0 < weak.score < 0.2
    integ.token_rejected("other_session", T0)
    s = integ.signal(T0)
    assert s.score >= 0.9 and "another session" in s.explanation
    integ.token_rejected("forged")
    integ.token_rejected("something new")
    assert integ.signal(T0).details["token_forged"] == 1 and integ.signal(T0).details["token_malformed"] == 1


def test_memory_is_bounded():
    cfg = IntegrityConfig(max_pages=16, max_pending_submissions=8)
    integ = SensorIntegrity(cfg)
    for i in range(1500):
        integ.page_served(f"p{i}", T0 + i)
        integ.batch(f"p{i}", 1, keys(2, start_ms=S0 + i * 1000), T0 + i, time_origin=S0 + i)
        integ.submission(f"p{i}", 1, T0 + i)
    assert len(integ._pages) <= 16 and len(integ._streams) <= 32 and len(integ._pending) <= 8
    assert len(integ._key_rate.tail) < 1000
    integ.batch("flood", 1, make_batch(np.full(4096, S0), 0, Kind.KEY_DOWN), T0)
    assert len(integ._key_rate.tail) <= int(cfg.max_keys_per_s * cfg.key_rate_window_s * 2 + 16)


def test_config_is_validated():
    with pytest.raises(ValueError):
        IntegrityConfig(silent_after_s=0)
    with pytest.raises(ValueError):
        IntegrityConfig(w_silent=1.0)


def test_signal_serialises():
    integ = SensorIntegrity()
    integ.page_served("p1", T0)
    d = integ.signal(T0).to_dict()
    assert d["name"] == "sensor" and isinstance(d["details"]["pages_served"], float)


def test_inputs_the_scorer_refused_are_evidence_of_tampering():
    # one event stamped far in the future made the scorer refuse every later key as late: the keys still counted
    # as reported here, so nothing showed; now each batch with refused inputs counts
    integ = SensorIntegrity()
    integ.page_served("p1", T0)
    integ.batch("p1", 1, keys(5), T0, time_origin=S0)
    integ.inputs_refused(1, T0)  # a race around a page change: one episode stays below the sensor-tampered level
    assert integ.signal(T0).score < 0.5
    for _ in range(3):
        integ.inputs_refused(10, T0)
    s = integ.signal(T0)
    assert s.score >= 0.5 and s.details["inputs_refused"] == 4 and "clock jumped" in s.explanation
    integ.inputs_refused(0, T0)
    assert integ.signal(T0).details["inputs_refused"] == 4
