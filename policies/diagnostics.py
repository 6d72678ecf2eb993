"""Load-time findings about policy files, each pinned to file:line:column."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    file: str
    line: int  # 1-based
    column: int  # 1-based
    message: str
    hint: str = ""
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}: "
        prefix = "warning: " if self.severity == "warning" else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{where}{prefix}{self.message}{hint}"

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "hint": self.hint,
            "severity": self.severity,
        }


class PolicyLoadError(Exception):
    """A policy directory had at least one error: nothing from it was loaded."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = list(diagnostics)
        errors = [d for d in self.diagnostics if d.severity == "error"]
        lines = "\n".join(str(d) for d in errors[:20])
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"{len(errors)} policy error(s):\n{lines}{more}")


def sort_key(diagnostic: Diagnostic) -> tuple:
    return (diagnostic.file, diagnostic.line, diagnostic.column, diagnostic.message)
