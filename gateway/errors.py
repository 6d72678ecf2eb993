"""Errors the shell reports to people: each names where the problem is and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass

KeyPath = tuple[str | int, ...]


@dataclass
class ConfigError(Exception):
    """A configuration value is wrong. `path` is the key path inside the config document (e.g.
    ("routes", 2, "upstream")); the config loader turns it into file:line:column."""

    path: KeyPath
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = ".".join(str(p) for p in self.path) or "<root>"
        return f"{where}: {self.message}" + (f" (hint: {self.hint})" if self.hint else "")
