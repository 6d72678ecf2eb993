"""Coarse key classes: enough for timing features, never enough to recover what was typed.

A key is reduced to the hand/row zone it sits in on a US QWERTY layout (by physical position for
`KeyboardEvent.code`, by the character's usual position for X11 keysyms), or to a functional class. Ten letters
share each zone on average, so a sequence of classes does not spell anything.
The JavaScript sensor carries the same table (`gateway/sensor/sensor.js`); a test keeps the two equal.
"""

from __future__ import annotations

from enum import IntEnum


class KeyClass(IntEnum):
    UNKNOWN = 0
    LEFT_TOP = 1  # q w e r t
    LEFT_HOME = 2  # a s d f g
    LEFT_BOTTOM = 3  # z x c v b
    RIGHT_TOP = 4  # y u i o p
    RIGHT_HOME = 5  # h j k l
    RIGHT_BOTTOM = 6  # n m
    SPACE = 7
    ENTER = 8
    BACKSPACE = 9  # Backspace and Delete: corrections
    MODIFIER = 10  # Shift, Control, Alt, Meta, CapsLock, AltGr
    DIGIT = 11
    PUNCT = 12
    NAVIGATION = 13  # arrows, Home/End, PageUp/PageDown
    TAB = 14
    OTHER = 15  # Escape, function keys, media keys


N_KEY_CLASSES = len(KeyClass)

_ZONES = {
    KeyClass.LEFT_TOP: "qwert",
    KeyClass.LEFT_HOME: "asdfg",
    KeyClass.LEFT_BOTTOM: "zxcvb",
    KeyClass.RIGHT_TOP: "yuiop",
    KeyClass.RIGHT_HOME: "hjkl",
    KeyClass.RIGHT_BOTTOM: "nm",
}
_LETTER_CLASS = {ch: cls for cls, letters in _ZONES.items() for ch in letters}

# KeyboardEvent.code values that are not KeyA..KeyZ / Digit0..9 / Numpad*
JS_CODE_CLASSES: dict[str, KeyClass] = {
    "Space": KeyClass.SPACE,
    "Enter": KeyClass.ENTER,
    "NumpadEnter": KeyClass.ENTER,
    "Backspace": KeyClass.BACKSPACE,
    "Delete": KeyClass.BACKSPACE,
    "Tab": KeyClass.TAB,
    "ShiftLeft": KeyClass.MODIFIER,
    "ShiftRight": KeyClass.MODIFIER,
    "ControlLeft": KeyClass.MODIFIER,
    "ControlRight": KeyClass.MODIFIER,
    "AltLeft": KeyClass.MODIFIER,
    "AltRight": KeyClass.MODIFIER,
    "MetaLeft": KeyClass.MODIFIER,
    "MetaRight": KeyClass.MODIFIER,
    "CapsLock": KeyClass.MODIFIER,
    "ArrowLeft": KeyClass.NAVIGATION,
    "ArrowRight": KeyClass.NAVIGATION,
    "ArrowUp": KeyClass.NAVIGATION,
    "ArrowDown": KeyClass.NAVIGATION,
    "Home": KeyClass.NAVIGATION,
    "End": KeyClass.NAVIGATION,
    "PageUp": KeyClass.NAVIGATION,
    "PageDown": KeyClass.NAVIGATION,
    "Minus": KeyClass.PUNCT,
    "Equal": KeyClass.PUNCT,
    "BracketLeft": KeyClass.PUNCT,
    "BracketRight": KeyClass.PUNCT,
    "Backslash": KeyClass.PUNCT,
    "Semicolon": KeyClass.PUNCT,
    "Quote": KeyClass.PUNCT,
    "Backquote": KeyClass.PUNCT,
    "Comma": KeyClass.PUNCT,
    "Period": KeyClass.PUNCT,
    "Slash": KeyClass.PUNCT,
    "IntlBackslash": KeyClass.PUNCT,
    "Escape": KeyClass.OTHER,
}


def from_js_code(code: str) -> KeyClass:
    """`KeyboardEvent.code` (a physical position, layout independent) to its class."""
    if len(code) == 4 and code.startswith("Key"):
        return _LETTER_CLASS.get(code[3].lower(), KeyClass.UNKNOWN)
    if code.startswith("Digit") or (code.startswith("Numpad") and code[6:].isdigit()):
        return KeyClass.DIGIT
    if code.startswith("Numpad"):
        return KeyClass.PUNCT
    if code.startswith("F") and code[1:].isdigit():
        return KeyClass.OTHER
    return JS_CODE_CLASSES.get(code, KeyClass.UNKNOWN)


_KEYSYM_SPECIAL: dict[int, KeyClass] = {
    0x0020: KeyClass.SPACE,
    0xFF0D: KeyClass.ENTER,  # Return
    0xFF8D: KeyClass.ENTER,  # KP_Enter
    0xFF08: KeyClass.BACKSPACE,
    0xFFFF: KeyClass.BACKSPACE,  # Delete
    0xFF09: KeyClass.TAB,
    0xFE20: KeyClass.TAB,  # ISO_Left_Tab
    0xFF1B: KeyClass.OTHER,  # Escape
}
_KEYSYM_MODIFIERS = range(0xFFE1, 0xFFEF)  # Shift_L .. Hyper_R, Caps_Lock, Meta, Alt, Super
_KEYSYM_NAVIGATION = range(0xFF50, 0xFF58)  # Home, Left, Up, Right, Down, Prior, Next, End


def from_keysym(keysym: int) -> KeyClass:
    """An X11 keysym (Guacamole `key`, RFB KeyEvent) to its class. The keysym is discarded by the caller."""
    if keysym in _KEYSYM_SPECIAL:
        return _KEYSYM_SPECIAL[keysym]
    if keysym in _KEYSYM_MODIFIERS or keysym == 0xFE03:  # ISO_Level3_Shift (AltGr)
        return KeyClass.MODIFIER
    if keysym in _KEYSYM_NAVIGATION:
        return KeyClass.NAVIGATION
    if 0x30 <= keysym <= 0x39 or 0xFFB0 <= keysym <= 0xFFB9:
        return KeyClass.DIGIT
    if 0x41 <= keysym <= 0x5A or 0x61 <= keysym <= 0x7A:
        return _LETTER_CLASS[chr(keysym).lower()]
    if 0x21 <= keysym <= 0x7E or 0xFFAA <= keysym <= 0xFFAF:
        return KeyClass.PUNCT
    if 0xFFBE <= keysym <= 0xFFE0:  # F1..F35
        return KeyClass.OTHER
    if 0xA0 <= keysym <= 0xFF or 0x01000100 <= keysym <= 0x0110FFFF:
        # Latin-1 letters and Unicode keysyms: a letter of some layout; position unknown
        return KeyClass.UNKNOWN
    return KeyClass.UNKNOWN


def from_aalto_keycode(keycode: int) -> KeyClass:
    """JavaScript legacy `keyCode` (the Aalto dataset's KEYCODE column) to its class; offline evaluation only."""
    if 65 <= keycode <= 90:
        return _LETTER_CLASS[chr(keycode).lower()]
    if 48 <= keycode <= 57 or 96 <= keycode <= 105:
        return KeyClass.DIGIT
    return {
        32: KeyClass.SPACE,
        13: KeyClass.ENTER,
        8: KeyClass.BACKSPACE,
        46: KeyClass.BACKSPACE,
        9: KeyClass.TAB,
        16: KeyClass.MODIFIER,
        17: KeyClass.MODIFIER,
        18: KeyClass.MODIFIER,
        20: KeyClass.MODIFIER,
        91: KeyClass.MODIFIER,
        93: KeyClass.MODIFIER,
        225: KeyClass.MODIFIER,
        27: KeyClass.OTHER,
        33: KeyClass.NAVIGATION,
        34: KeyClass.NAVIGATION,
        35: KeyClass.NAVIGATION,
        36: KeyClass.NAVIGATION,
        37: KeyClass.NAVIGATION,
        38: KeyClass.NAVIGATION,
        39: KeyClass.NAVIGATION,
        40: KeyClass.NAVIGATION,
    }.get(keycode, KeyClass.PUNCT if 186 <= keycode <= 222 or 106 <= keycode <= 111 else KeyClass.UNKNOWN)
