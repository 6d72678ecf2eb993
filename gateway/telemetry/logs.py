"""Structured logs: one JSON object per line (or plain text for a terminal), with the trace id when a span is
active. Messages never carry typed characters: the code that logs only has timing and key classes."""

from __future__ import annotations

import json
import logging
import sys
import time

from opentelemetry import trace

from ..text import printable


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ids = _trace_ids()
        if ids is not None:
            data["trace_id"], data["span_id"] = ids
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """One record, one line: a message that carries a client's or an IdP's string (an OIDC error_description, a
    WebAuthn origin) could otherwise start a forged record with CR LF, or send escape sequences to a terminal.
    Control characters are shown escaped (gateway.text.printable, as the CLI shows such strings); a traceback keeps
    its lines, each indented so none looks like a record."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return printable(super().formatMessage(record))

    def formatException(self, ei) -> str:  # noqa: N802
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return _indented(stack_info)


def _indented(text: str) -> str:
    return "\n".join("  " + printable(line) for line in text.split("\n"))


def _trace_ids() -> tuple[str, str] | None:
    """The current span's ids in W3C form (what collectors and the OTLP exporter show), if a span is active."""
    ctx = trace.get_current_span().get_span_context()
    return (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")) if ctx.is_valid else None


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # mitmproxy logs every client connect at info: keep it to warnings
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)
