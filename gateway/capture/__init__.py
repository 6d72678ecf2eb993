"""Inline protocol parsers for remote-desktop sessions: each reduces a passing stream to event batches and
returns what to forward (optionally filtered). See docs/architecture.md (capture/)."""

from .common import NO_FILTER, Filter, Limits, Opacity, Result
from .guacamole import GuacamoleParser
from .rfb import RfbParser
from .terminal import TerminalParser

__all__ = ["NO_FILTER", "Filter", "GuacamoleParser", "Limits", "Opacity", "Result", "RfbParser", "TerminalParser"]
