"""US-QWERTY key tables: JavaScript keyCode / characters to the KeyboardEvent fields a browser needs.

The harness dispatches keys through CDP `Input.dispatchKeyEvent`, which wants `code`, `key`,
`windowsVirtualKeyCode` and, for keys that insert text, `text`. The Aalto data logs a legacy keyCode and (mostly)
the character; these tables reconcile the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SHIFT = 8  # CDP modifier bit
SHIFT_CODES = frozenset({"ShiftLeft", "ShiftRight"})


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One physical key as a browser event. `key`/`text` can be characters: kept out of reprs and logs."""

    code: str  # KeyboardEvent.code ("KeyA", "Backspace", ...)
    vk: int  # windowsVirtualKeyCode (== legacy keyCode on US layouts)
    key: str = field(repr=False)  # KeyboardEvent.key
    text: str = field(default="", repr=False)  # inserted text for printable keys, "" otherwise
    location: int = 0  # 1 left, 2 right, 3 numpad

    @property
    def printable(self) -> bool:
        return bool(self.text)


# code -> (unshifted, shifted) characters on a US layout
_PRINTABLE: dict[str, tuple[str, str]] = {f"Key{c}": (c.lower(), c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
_PRINTABLE.update({f"Digit{d}": (d, s) for d, s in zip("0123456789", ")!@#$%^&*(", strict=True)})
_PRINTABLE.update(
    {
        "Space": (" ", " "),
        "Minus": ("-", "_"),
        "Equal": ("=", "+"),
        "BracketLeft": ("[", "{"),
        "BracketRight": ("]", "}"),
        "Backslash": ("\\", "|"),
        "Semicolon": (";", ":"),
        "Quote": ("'", '"'),
        "Backquote": ("`", "~"),
        "Comma": (",", "<"),
        "Period": (".", ">"),
        "Slash": ("/", "?"),
    }
)
_PRINTABLE.update({f"Numpad{d}": (d, d) for d in "0123456789"})
_PRINTABLE.update(
    {
        "NumpadMultiply": ("*", "*"),
        "NumpadAdd": ("+", "+"),
        "NumpadSubtract": ("-", "-"),
        "NumpadDecimal": (".", "."),
        "NumpadDivide": ("/", "/"),
    }
)

# code -> (windowsVirtualKeyCode, key value for non-printable keys)
_NAMED: dict[str, tuple[int, str]] = {
    "Backspace": (8, "Backspace"),
    "Tab": (9, "Tab"),
    "Enter": (13, "Enter"),
    "ShiftLeft": (16, "Shift"),
    "ShiftRight": (16, "Shift"),
    "ControlLeft": (17, "Control"),
    "AltLeft": (18, "Alt"),
    "CapsLock": (20, "CapsLock"),
    "Escape": (27, "Escape"),
    "PageUp": (33, "PageUp"),
    "PageDown": (34, "PageDown"),
    "End": (35, "End"),
    "Home": (36, "Home"),
    "ArrowLeft": (37, "ArrowLeft"),
    "ArrowUp": (38, "ArrowUp"),
    "ArrowRight": (39, "ArrowRight"),
    "ArrowDown": (40, "ArrowDown"),
    "Insert": (45, "Insert"),
    "Delete": (46, "Delete"),
    "MetaLeft": (91, "Meta"),
    "ContextMenu": (93, "ContextMenu"),
    "NumLock": (144, "NumLock"),
}
_NAMED.update({f"F{n}": (111 + n, f"F{n}") for n in range(1, 13)})

_VK_OF_PRINTABLE: dict[str, int] = {f"Key{c}": ord(c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
_VK_OF_PRINTABLE.update({f"Digit{d}": ord(d) for d in "0123456789"})
_VK_OF_PRINTABLE.update({f"Numpad{d}": 96 + int(d) for d in "0123456789"})
_VK_OF_PRINTABLE.update(
    {
        "Space": 32,
        "NumpadMultiply": 106,
        "NumpadAdd": 107,
        "NumpadSubtract": 109,
        "NumpadDecimal": 110,
        "NumpadDivide": 111,
        "Semicolon": 186,
        "Equal": 187,
        "Comma": 188,
        "Minus": 189,
        "Period": 190,
        "Slash": 191,
        "Backquote": 192,
        "BracketLeft": 219,
        "Backslash": 220,
        "BracketRight": 221,
        "Quote": 222,
    }
)

_CODE_OF_KEYCODE: dict[int, str] = {vk: code for code, vk in _VK_OF_PRINTABLE.items()}
_CODE_OF_KEYCODE.update({vk: code for code, (vk, _) in _NAMED.items() if code != "ShiftRight"})
_CODE_OF_KEYCODE.update({59: "Semicolon", 61: "Equal", 173: "Minus"})  # Firefox's own keyCodes

# character -> (code, needs shift), US layout, main block first
_CODE_OF_CHAR: dict[str, tuple[str, bool]] = {}
for _code, (_plain, _shifted) in _PRINTABLE.items():
    if _code.startswith("Numpad"):
        continue
    _CODE_OF_CHAR.setdefault(_plain, (_code, False))
    _CODE_OF_CHAR.setdefault(_shifted, (_code, True))

_LOCATION = {"ShiftLeft": 1, "ControlLeft": 1, "AltLeft": 1, "MetaLeft": 1, "ShiftRight": 2}

SHIFT_LEFT = KeySpec(code="ShiftLeft", vk=16, key="Shift", location=1)
BACKSPACE = KeySpec(code="Backspace", vk=8, key="Backspace")
ENTER = KeySpec(code="Enter", vk=13, key="Enter")


def code_for_keycode(keycode: int) -> str:
    """Legacy keyCode to KeyboardEvent.code on a US layout; "" when unknown."""
    return _CODE_OF_KEYCODE.get(keycode, "")


def char_position(char: str) -> tuple[str, bool] | None:
    """Where a character sits on a US layout: (code, needs Shift), or None."""
    return _CODE_OF_CHAR.get(char)


def spec_for_code(code: str, *, shifted: bool = False, caps: bool = False) -> KeySpec:
    if code in _PRINTABLE:
        plain, upper = _PRINTABLE[code]
        char = upper if shifted != (caps and code.startswith("Key")) else plain
        location = 3 if code.startswith("Numpad") else 0
        return KeySpec(code=code, vk=_VK_OF_PRINTABLE[code], key=char, text=char, location=location)
    if code in _NAMED:
        vk, key = _NAMED[code]
        return KeySpec(code=code, vk=vk, key=key, location=_LOCATION.get(code, 0))
    return KeySpec(code="", vk=0, key="Unidentified")


def spec_for_char(char: str) -> tuple[KeySpec, bool]:
    """A character to the key that types it on a US layout, and whether Shift must be held.

    Characters off the US layout still get typed (text is what matters for the field), on an unidentified key.
    """
    if char == "\n":
        return ENTER, False
    position = char_position(char)
    if position is None:
        return KeySpec(code="", vk=0, key=char, text=char), False
    code, shifted = position
    return KeySpec(code=code, vk=_VK_OF_PRINTABLE[code], key=char, text=char), shifted


def spec_for_logged(keycode: int, letter: str, *, shifted: bool, caps: bool) -> KeySpec:
    """A logged (keyCode, LETTER) pair to the key to dispatch.

    LETTER, when it is one printable character, is what appeared in the participant's field, so it wins for
    `text`; the physical key comes from keyCode when that key can produce the character on a US layout, otherwise
    from the character itself (some browsers logged the charCode as keyCode, e.g. '%' as 37; some layouts differ).
    """
    code = code_for_keycode(keycode)
    if len(letter) == 1 and letter.isprintable():
        if code in _PRINTABLE and letter in _PRINTABLE[code]:
            return KeySpec(code=code, vk=_VK_OF_PRINTABLE[code], key=letter, text=letter, location=3 * code.startswith("Numpad"))
        if code.startswith("Key") and letter.isalpha():  # another layout's letter on a letter key
            return KeySpec(code=code, vk=_VK_OF_PRINTABLE[code], key=letter, text=letter)
        spec, _ = spec_for_char(letter)
        return spec
    return spec_for_code(code, shifted=shifted, caps=caps)
