"""A `Signal` whose explanation text is written only when someone reads it.

Detectors assess every batch, but the sentence that explains a score is read only when an Assessment is serialised
(`to_dict()`) or a decision is logged. Formatting it on every batch was a measurable share of the online update, so
detectors hand over a zero-argument function instead; reading `.explanation` calls it once and keeps the text.
It is a `Signal` in every respect that callers use (isinstance, fields, `to_dict()`).
"""

from __future__ import annotations

from collections.abc import Callable

from .signals import Evidence, Signal

_SLOTS = {name: Signal.__dict__[name] for name in ("name", "score", "sufficient", "evidence", "explanation", "details")}
_TEXT = _SLOTS["explanation"]


class LazySignal(Signal):
    __slots__ = ("_explain",)

    def __init__(
        self,
        name: str,
        score: float,
        sufficient: bool,
        evidence: Evidence,
        explanation: str | Callable[[], str],
        details: dict[str, float] | None = None,
    ):
        # the parent is a frozen dataclass: its slots are written through their descriptors, once, here
        for field_name, value in (("name", name), ("score", score), ("sufficient", sufficient), ("evidence", evidence)):
            _SLOTS[field_name].__set__(self, value)
        _SLOTS["details"].__set__(self, {} if details is None else details)
        if callable(explanation):
            object.__setattr__(self, "_explain", explanation)
            _TEXT.__set__(self, "")
        else:
            object.__setattr__(self, "_explain", None)
            _TEXT.__set__(self, explanation)

    @property
    def explanation(self) -> str:  # type: ignore[override]
        explain = self._explain
        if explain is not None:
            _TEXT.__set__(self, explain())
            object.__setattr__(self, "_explain", None)
        return _TEXT.__get__(self, Signal)

    def with_evidence(self, evidence: Evidence) -> LazySignal:
        """The same verdict with updated evidence counts (the text stays unwritten)."""
        out = LazySignal.__new__(LazySignal)
        for field_name in ("name", "score", "sufficient", "details"):
            _SLOTS[field_name].__set__(out, _SLOTS[field_name].__get__(self, Signal))
        _SLOTS["evidence"].__set__(out, evidence)
        _TEXT.__set__(out, _TEXT.__get__(self, Signal))
        object.__setattr__(out, "_explain", self._explain)
        return out
