"""Text for an admin's terminal or a log: strings that came from users, IdPs or browsers are shown, never obeyed.

An OIDC claim or a User-Agent can hold escape sequences (clear the screen, retitle the window, write the clipboard
with OSC 52, fake a whole event line with CR LF). Every control or format character (Unicode Cc, Cf, Zl, Zp:
C0/C1 controls, bidi overrides, zero-width characters, line separators) is shown as its escape instead.
"""

from __future__ import annotations

import unicodedata
from typing import Any

_HIDDEN = ("Cc", "Cf", "Zl", "Zp")


def printable(text: str) -> str:
    if text.isprintable():  # the common case, in C
        return text
    out = []
    for ch in text:
        if unicodedata.category(ch) in _HIDDEN:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def printable_tree(value: Any) -> Any:
    """The same JSON-like value with every string (keys too) made printable."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable_tree(k): printable_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable_tree(v) for v in value]
    return value
