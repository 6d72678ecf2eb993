import numpy as np

from scoring.events import EVENT_DTYPE, Kind, make_batch, sanitize
from scoring.keys import KeyClass, from_aalto_keycode, from_js_code, from_keysym


def test_js_codes_map_to_coarse_classes():
    assert from_js_code("KeyQ") == KeyClass.LEFT_TOP
    assert from_js_code("KeyJ") == KeyClass.RIGHT_HOME
    assert from_js_code("Digit7") == KeyClass.DIGIT
    assert from_js_code("Numpad3") == KeyClass.DIGIT
    assert from_js_code("NumpadAdd") == KeyClass.PUNCT
    assert from_js_code("Backspace") == KeyClass.BACKSPACE
    assert from_js_code("F5") == KeyClass.OTHER
    assert from_js_code("NoSuchKey") == KeyClass.UNKNOWN
    assert from_js_code("") == KeyClass.UNKNOWN


def test_keysyms_map_to_the_same_classes_as_js_codes():
    for ch in "qwertyuiopasdfghjklzxcvbnm":
        assert from_keysym(ord(ch)) == from_js_code("Key" + ch.upper())
        assert from_keysym(ord(ch.upper())) == from_js_code("Key" + ch.upper())
    assert from_keysym(0xFF08) == KeyClass.BACKSPACE
    assert from_keysym(0xFFE1) == KeyClass.MODIFIER
    assert from_keysym(0x20) == KeyClass.SPACE
    assert from_keysym(0x01000439) == KeyClass.UNKNOWN  # a Cyrillic letter: position unknown
    assert from_keysym(-5) == KeyClass.UNKNOWN


def test_aalto_keycodes():
    assert from_aalto_keycode(65) == KeyClass.LEFT_HOME
    assert from_aalto_keycode(8) == KeyClass.BACKSPACE
    assert from_aalto_keycode(190) == KeyClass.PUNCT
    assert from_aalto_keycode(999) == KeyClass.UNKNOWN


def test_every_class_holds_several_letters_or_is_functional():
    counts = {}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        counts[from_js_code("Key" + ch.upper())] = counts.get(from_js_code("Key" + ch.upper()), 0) + 1
    assert min(counts.values()) >= 2  # no class identifies a single letter


def test_sanitize_drops_nan_duplicates_unknown_kinds_and_sorts():
    b = make_batch([5.0, np.nan, 1.0, 1.0, 3.0], 1.7e12, Kind.KEY_DOWN, key=[1, 2, 3, 3, 200])
    b["kind"][4] = 77
    clean, dropped = sanitize(b)
    assert dropped == 3
    assert list(clean["t_src"]) == [1.0, 5.0]
    assert clean.dtype == EVENT_DTYPE
