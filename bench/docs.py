"""Benchmarks write their own section of docs/benchmarks.md, leaving the others as they are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(section: str, path: Path = BENCHMARKS) -> None:
    """Replaces the section whose heading is `section`'s first line (a `## ...` line), or appends it."""
    heading = section.split("\n", 1)[0]
    if not heading.startswith("## "):
        raise ValueError(f"a section starts with its '## ' heading, not {heading!r}")
    section = section.rstrip("\n") + "\n\n"  # one blank line before whatever section follows
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    start = text.find(heading + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def publish(result: dict[str, Any], render: Callable[[dict[str, Any]], str], *, as_json: bool, write: bool,
            path: Path = BENCHMARKS) -> int:
    """A benchmark's last step: its section written to the docs (unless --no-write), the result printed."""
    section = render(result)
    if write:
        write_section(section, path)
    print(json.dumps(result, indent=2) if as_json else section)
    return 0
