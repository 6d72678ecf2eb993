"""The policy set in force, and hot reload: each process watches the directory itself.

A valid change is in force within `reload_interval` (default 1 s) on every process that sees the directory
(a shared volume, a Kubernetes ConfigMap). An invalid change is refused, logged and reported as a security
event; the previous set stays in force.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Awaitable, Callable

import policies

log = logging.getLogger("ztgate.policies")

DEFAULTS = Path(policies.__file__).parent / "defaults"


def directory_fingerprint(directory: Path) -> str:
    """Names, sizes and mtimes of the policy files: cheap to compute every second."""
    h = hashlib.blake2b(digest_size=16)
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        return f"unreadable:{exc.errno}"
    for entry in entries:
        if entry.name.endswith((".yaml", ".yml")) and entry.is_file():
            st = entry.stat()
            h.update(f"{entry.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        elif entry.is_dir() and not entry.name.startswith("."):
            h.update(f"{entry.name}/{directory_fingerprint(Path(entry.path))}\n".encode())
    return h.hexdigest()


class PolicyHolder:
    def __init__(self, directory: str | None, interval: float = 1.0,
                 on_rejected: Callable[[str, list[str]], Awaitable[None]] | None = None) -> None:
        self.directory = Path(directory) if directory else DEFAULTS
        self.interval = interval
        self.on_rejected = on_rejected
        self.current: Any = None
        self._fingerprint = ""
        self.reloads = 0
        self.rejections = 0
        self.last_error: list[str] = []

    def load_initial(self) -> None:
        """At start: an invalid directory is a start-up error (raises policies.PolicyLoadError)."""
        self._fingerprint = directory_fingerprint(self.directory)
        self.current = policies.load_directory(self.directory)
        log.info("policies loaded from %s (digest %s)", self.directory, self.current.digest[:12])

    async def check_now(self) -> bool:
        """Reloads if the directory changed. True if a new set came into force."""
        fingerprint = directory_fingerprint(self.directory)
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        try:
            candidate = await asyncio.to_thread(policies.load_directory, self.directory)
        except policies.PolicyLoadError as err:
            self.rejections += 1
            self.last_error = [str(d) for d in err.diagnostics]
            log.error("policy change refused, previous set stays in force:\n%s", "\n".join(self.last_error))
            if self.on_rejected is not None:
                await self.on_rejected(str(self.directory), self.last_error)
            return False
        if self.current is not None and candidate.digest == self.current.digest:
            return False
        self.current = candidate
        self.last_error = []
        self.reloads += 1
        log.info("policies reloaded from %s (digest %s)", self.directory, candidate.digest[:12])
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check_now()
            except Exception:
                log.exception("policy reload failed unexpectedly; previous set stays in force")
