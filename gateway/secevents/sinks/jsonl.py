"""JSONL file sink with size-based rotation (path, path.1 ... path.N). A full disk is a retryable failure:
the partial line is cut off, so a retry never leaves a corrupt line behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from ..config import JsonlSinkConfig
from ..outbox import Record
from .base import DeliveryError, event_body


class JsonlSink:
    type = "jsonl"

    def __init__(self, cfg: JsonlSinkConfig):
        self.cfg = cfg
        self.name = cfg.name
        self.path = Path(cfg.path)
        self._fh = None

    def _rotate(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.cfg.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for i in range(self.cfg.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def _write(self, line: bytes) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")
        size = self._fh.tell()
        if size > 0 and size + len(line) > self.cfg.max_bytes:
            self._rotate()
            self._fh = open(self.path, "ab")
            size = 0
        try:
            self._fh.write(line)
            self._fh.flush()
            if self.cfg.fsync:
                os.fsync(self._fh.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                self._fh.truncate(size)
                self._fh.seek(size)
            raise

    async def deliver(self, record: Record) -> None:
        try:
            await asyncio.to_thread(self._write, event_body(record) + b"\n")
        except OSError as err:
            # Drop the handle so the next attempt reopens (the file may have been removed or remounted).
            with contextlib.suppress(Exception):
                if self._fh is not None:
                    self._fh.close()
            self._fh = None
            raise DeliveryError(f"{self.path}: {err.strerror or err}") from None

    async def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
