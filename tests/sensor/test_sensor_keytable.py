"""sensor.js reduces KeyboardEvent.code to key classes in the browser: its table must equal scoring/keys.py."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from scoring import keys
from scoring.keys import KeyClass, from_js_code

SENSOR_JS = Path(__file__).resolve().parents[2] / "gateway" / "sensor" / "sensor.js"

# Every KeyboardEvent.code in the W3C "UI Events KeyboardEvent code Values" list, plus oddities.
ALL_CODES = (
    [f"Key{c}" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
    + [f"Digit{d}" for d in range(10)]
    + [f"Numpad{d}" for d in range(10)]
    + [f"F{n}" for n in range(1, 25)]
    + """Backquote Backslash BracketLeft BracketRight Comma Equal IntlBackslash IntlRo IntlYen Minus Period Quote
    Semicolon Slash AltLeft AltRight Backspace CapsLock ContextMenu ControlLeft ControlRight Enter MetaLeft MetaRight
    ShiftLeft ShiftRight Space Tab Convert KanaMode Lang1 Lang2 Lang3 Lang4 Lang5 NonConvert Delete End Help Home
    Insert PageDown PageUp ArrowDown ArrowLeft ArrowRight ArrowUp NumLock NumpadAdd NumpadBackspace NumpadClear
    NumpadClearEntry NumpadComma NumpadDecimal NumpadDivide NumpadEnter NumpadEqual NumpadHash NumpadMemoryAdd
    NumpadMemoryClear NumpadMemoryRecall NumpadMemoryStore NumpadMemorySubtract NumpadMultiply NumpadParenLeft
    NumpadParenRight NumpadStar NumpadSubtract Escape Fn FnLock PrintScreen ScrollLock Pause BrowserBack
    BrowserFavorites BrowserForward BrowserHome BrowserRefresh BrowserSearch BrowserStop Eject LaunchApp1 LaunchApp2
    LaunchMail MediaPlayPause MediaSelect MediaStop MediaTrackNext MediaTrackPrevious Power Sleep AudioVolumeDown
    AudioVolumeMute AudioVolumeUp WakeUp Hyper Super Turbo Abort Resume Suspend Again Copy Cut Find Open Paste Props
    Select Undo Hiragana Katakana Unidentified""".split()
    + ["", "Key", "KeyAB", "Key1", "Digit", "DigitX", "Numpad", "Numpad12", "F", "F1x", "constructor", "toString",
       "__proto__", "hasOwnProperty"]
)


def js_source() -> str:
    return SENSOR_JS.read_text()


def js_keyclass_block() -> str:
    m = re.search(r"/\* <keyclass>.*?\*/(.*?)/\* </keyclass> \*/", js_source(), re.S)
    assert m, "sensor.js lost its <keyclass> markers"
    return m.group(1)


def parse_js_object(text: str) -> dict:
    # the table is written as an object literal of bare identifiers and integers
    return json.loads(re.sub(r"([A-Za-z_]\w*)\s*:", r'"\1":', text))


def test_js_tables_equal_python_tables():
    block = js_keyclass_block()
    zones = json.loads(re.search(r"var ZONES = (\[.*?\]);", block, re.S).group(1))
    codes = parse_js_object(re.search(r"var CODES = (\{.*?\});", block, re.S).group(1))
    assert zones[0] == ""
    assert {KeyClass(i): z for i, z in enumerate(zones) if i} == keys._ZONES
    assert codes == {name: int(cls) for name, cls in keys.JS_CODE_CLASSES.items()}


def test_js_never_reads_characters_or_values():
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", js_source(), flags=re.S)
    for forbidden in (".key ", ".key)", ".key;", ".key,", ".key=", ".value", ".innerText", ".textContent",
                      ".keyCode", ".which", ".charCode", ".data ", "getSelection", "clipboard"):
        assert forbidden not in code, forbidden
    assert "e.code" in code


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed; the browser test covers this")
def test_js_function_equals_from_js_code_for_every_code():
    program = (
        js_keyclass_block()
        + "\nconsole.log(JSON.stringify(JSON.parse(process.argv[1]).map(keyClass)));"
    )
    out = subprocess.run(["node", "-e", program, json.dumps(ALL_CODES)], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert got == [int(from_js_code(code)) for code in ALL_CODES]
