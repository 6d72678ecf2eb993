"""Automation's no-reaction evidence: starts after a new field, dialog or page that come sooner than people react."""

import numpy as np
import pytest
from scoring_helpers import EPOCH0, feed, typing

import scoring
from scoring.detectors import automation as A
from scoring.events import Kind, Stimulus, concat, make_batch
from scoring.keys import KeyClass


def _line(t0: float, start_ms: float, seed: int, *, gap_ms: float = 600.0, n: int = 30,
          stimulus: Stimulus = Stimulus.FIELD_APPEARED, end: KeyClass = KeyClass.ENTER) -> tuple[np.ndarray, float]:
    """A line-item step: a prompt appears `gap_ms` after the previous line's last key, the first key of a typed line
    follows `start_ms` later, the line ends with `end`. Returns (events, time of the final key's release)."""
    stim = t0 + gap_ms
    keys = typing(n, seed, t0=stim + start_ms - 170.0)  # typing()'s first down comes one flight after t0
    shift = stim + start_ms - keys["t_src"][keys["kind"] == Kind.KEY_DOWN][0]
    keys["t_src"] += shift
    keys["t_arr"] += shift
    last = float(keys["t_src"].max())
    enter = make_batch([last + 150.0], [last + 150.0 + EPOCH0], Kind.KEY_DOWN, key=end)
    enter_up = make_batch([last + 230.0], [last + 230.0 + EPOCH0], Kind.KEY_UP, key=end)
    prompt = make_batch([stim], [stim + EPOCH0], Kind.STIMULUS, detail=stimulus)
    ev = concat([prompt, keys, enter, enter_up])
    return ev[np.argsort(ev["t_src"], kind="stable")], last + 230.0


def _form(starts_ms: list[float], seed: int = 0, **kw) -> np.ndarray:
    """A first line typed without any prompt, then one prompted line per entry of `starts_ms`."""
    first = typing(30, seed)
    t = float(first["t_src"].max())
    enter = make_batch([t + 150.0, t + 230.0], [t + 150.0 + EPOCH0, t + 230.0 + EPOCH0], [Kind.KEY_DOWN, Kind.KEY_UP],
                       key=kw.get("end", KeyClass.ENTER))
    parts = [first, enter]
    t += 230.0
    for i, start in enumerate(starts_ms):
        ev, t = _line(t, start, seed + 1 + i, **kw)
        parts.append(ev)
    return concat(parts)


def _starts(events: np.ndarray, size: int = 10_000) -> list[float]:
    """extract_starts over `events` fed in batches of `size`."""
    carry = A.new_start_carry()
    out: list[float] = []
    for i in range(0, len(events), size):
        b = events[i : i + size]
        stim = b["kind"] == Kind.STIMULUS
        lat, carry = A.extract_starts(b["t_src"][stim], b["detail"][stim], b["t_src"][~stim], b["kind"][~stim],
                                      b["key"][~stim], carry)
        out += lat.tolist()
    return out


def test_prompt_after_enter_and_a_wait_is_a_start_with_its_latency():
    assert _starts(_form([40.0, 450.0, 35.0])) == pytest.approx([40.0, 450.0, 35.0])


@pytest.mark.parametrize("size", [1, 2, 3, 7, 50])
def test_starts_do_not_depend_on_batching(size):
    ev = _form([40.0, 450.0, 35.0, 900.0], seed=3)
    assert _starts(ev, size) == pytest.approx(_starts(ev))


def test_typing_ahead_across_the_prompt_is_no_start():
    # the prompt appears 100 ms after Enter, while the user is already typing the next line: not idle before it
    assert _starts(_form([40.0, 30.0], gap_ms=100.0)) == []
    # keys typed through the appearance (the first key comes before the prompt) do not count either
    assert _starts(_form([-60.0, -200.0])) == []


def test_prompt_after_a_character_key_needs_a_second_of_quiet():
    # a suggestion list that shows during a typing pause (the last key was a letter, not Enter/Tab)
    assert _starts(_form([40.0, 40.0], gap_ms=600.0, end=KeyClass.LEFT_HOME)) == []
    assert _starts(_form([40.0, 40.0], gap_ms=1200.0, end=KeyClass.LEFT_HOME)) == pytest.approx([40.0, 40.0])


def test_page_ready_needs_a_second_of_quiet_even_after_enter():
    # keys typed while a page loads are lost between the two pages: a short gap is not a wait
    assert _starts(_form([40.0, 40.0], gap_ms=600.0, stimulus=Stimulus.PAGE_READY)) == []
    assert len(_starts(_form([40.0, 40.0], gap_ms=1500.0, stimulus=Stimulus.PAGE_READY))) == 2


def test_click_then_a_field_then_keys_is_no_start():
    # a click opens an editor 400 ms later and the person types at once: the last action was a click, not a wait
    t = 5000.0
    ev = concat([
        make_batch([t], [t + EPOCH0], Kind.POINTER_DOWN, x=10.0, y=10.0, detail=1),
        make_batch([t + 90], [t + 90 + EPOCH0], Kind.POINTER_UP, x=10.0, y=10.0),
        make_batch([t + 400], [t + 400 + EPOCH0], Kind.STIMULUS, detail=Stimulus.FIELD_APPEARED),
        make_batch([t + 440], [t + 440 + EPOCH0], Kind.KEY_DOWN, key=KeyClass.LEFT_HOME),
    ])
    assert _starts(concat([typing(10, 1), ev])) == []


def test_only_the_first_prompt_since_the_last_input_and_only_key_or_button_answers():
    t = 5000.0
    keys = typing(5, 2)
    enter = make_batch([3000.0], [3000.0 + EPOCH0], Kind.KEY_DOWN, key=KeyClass.ENTER)
    # two prompts: the latency runs from the first one
    two = concat([keys, enter, make_batch([t, t + 500], [t + EPOCH0, t + 500 + EPOCH0], Kind.STIMULUS,
                                          detail=Stimulus.FIELD_APPEARED),
                  make_batch([t + 540], [t + 540 + EPOCH0], Kind.KEY_DOWN, key=1)])
    assert _starts(two) == pytest.approx([540.0])
    # a pointer movement first: no start (idle hands on a mouse move by chance)
    moved = concat([keys, enter, make_batch([t], [t + EPOCH0], Kind.STIMULUS, detail=Stimulus.DIALOG),
                    make_batch([t + 30], [t + 30 + EPOCH0], Kind.POINTER_MOVE, x=1.0, y=1.0),
                    make_batch([t + 60], [t + 60 + EPOCH0], Kind.KEY_DOWN, key=1)])
    assert _starts(moved) == []
    # nothing seen before the prompt (session start): idle unknown, no start
    assert _starts(concat([make_batch([t], [t + EPOCH0], Kind.STIMULUS, detail=Stimulus.FIELD_APPEARED),
                           make_batch([t + 30], [t + 30 + EPOCH0], Kind.KEY_DOWN, key=1)])) == []


def test_echo_and_frames_are_not_prompts():
    ev = _form([40.0, 40.0], stimulus=Stimulus.ECHO)
    assert _starts(ev) == []
    assert _starts(_form([40.0, 40.0], stimulus=Stimulus.FRAME)) == []


def _score(starts_ms: list[float], profile=None, **kw):
    return feed(scoring.SessionScorer(profile), _form(starts_ms, **kw)).signals["automation"]


def test_fast_starts_after_quiet_are_evidence_of_a_program():
    one = _score([35.0])
    assert "no_reaction" not in one.details  # too few: one start is no evidence either way
    two = _score([35.0, 50.0])
    assert two.details["component_no_reaction"] >= 0.8 and two.score >= 0.8
    assert "2 of the last 2 starts after a new field, dialog or page" in two.explanation
    three = _score([35.0, 50.0, 42.0])
    assert three.score >= 0.95
    assert three.details["fastest_start_ms"] == pytest.approx(35.0)


def test_human_reactions_and_a_single_coincidence_are_not():
    human = _score([450.0, 380.0, 520.0, 610.0, 300.0])
    assert human.details["component_no_reaction"] < 0.01 and human.details["fast_starts"] == 0
    # one fast start among ordinary reactions, or fast, slow, fast: well below the step-up score
    assert _score([450.0, 40.0, 520.0, 610.0]).details["component_no_reaction"] < 0.1
    assert _score([40.0, 450.0, 40.0]).details["component_no_reaction"] < 0.5


def test_ambiguous_starts_count_neither_way():
    # 120-200 ms: the quickest people, or a script on a loaded machine; it neither adds nor removes evidence
    assert _score([35.0, 150.0, 50.0]).details["component_no_reaction"] >= 0.8
    assert _score([150.0, 160.0, 170.0]).details["component_no_reaction"] < 0.01


def test_starts_alone_make_the_signal_sufficient():
    # a script that only answers prompts with a key or two: too few flights for the other components
    s = scoring.SessionScorer(None)
    t = 0.0
    parts = [make_batch([t], [t + EPOCH0], Kind.KEY_DOWN, key=KeyClass.ENTER)]
    for i in range(3):
        stim = t + 800.0
        parts += [make_batch([stim], [stim + EPOCH0], Kind.STIMULUS, detail=Stimulus.DIALOG),
                  make_batch([stim + 30, stim + 60], [stim + 30 + EPOCH0, stim + 60 + EPOCH0], [Kind.KEY_DOWN, Kind.KEY_UP],
                             key=KeyClass.ENTER)]
        t = stim + 30
    sig = feed(s, concat(parts)).signals["automation"]
    assert sig.sufficient and sig.score >= 0.95


def test_no_reaction_state_round_trips_and_old_state_loads():
    s = scoring.SessionScorer(None)
    ev = _form([35.0, 50.0, 450.0])
    cut = int(np.flatnonzero(ev["kind"] == Kind.STIMULUS)[-1]) + 1  # a prompt pending across the save
    feed(s, ev[:cut])
    restored = scoring.SessionScorer.from_bytes(s.to_bytes(), None)
    assert np.array_equal(restored.automation.starts, s.automation.starts, equal_nan=True)
    assert np.array_equal(restored.automation.start_carry, s.automation.start_carry, equal_nan=True)
    feed(s, ev[cut:])
    feed(restored, ev[cut:])
    assert restored.assess().signals["automation"].details == s.assess().signals["automation"].details
    old = {k: v for k, v in s.automation.state().items() if not k.startswith("automation.start")}
    det = A.AutomationDetector(s.population)
    det.load(old)
    assert det.starts[2] == 0 and np.isnan(det.start_carry[0])


def test_reset_clears_the_evidence_but_not_the_carry():
    s = scoring.SessionScorer(None)
    feed(s, _form([35.0, 50.0]))
    carry = s.automation.start_carry.copy()
    s.reset_evidence()
    assert s.automation.starts[2] == 0 and s.automation.starts[0] == 0
    assert np.array_equal(s.automation.start_carry, carry, equal_nan=True)


def test_eval_form_model_script_starts_fast_and_people_do_not():
    from scoring.eval import relay as ev
    from scoring.eval.aalto import Sentence

    rng = np.random.default_rng(0)
    press = np.cumsum(rng.lognormal(np.log(170), 0.4, 40))
    sentence = Sentence(press, press + 100.0, rng.integers(1, 8, 40).astype(np.uint8))
    by_name = {c.name: c for c in ev.CONDITIONS}
    script = ev.form_events([sentence] * 6, np.random.default_rng(1), np.log(450),
                            by_name["replay with noise, no reaction (line-item form)"])
    person = ev.form_events([sentence] * 6, np.random.default_rng(1), np.log(450), by_name["line-item form: local"])
    assert _starts(script) and max(_starts(script)) < A.FAST_START_MS
    assert len(_starts(person)) == 5 and min(_starts(person)) > A.QUICK_START_MS
    s = scoring.SessionScorer(None)
    assert feed(s, script).signals["automation"].score >= 0.95
