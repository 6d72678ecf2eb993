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
        self._checked: tuple[Path, str] | None = None  # (directory, fingerprint) of the last completed check
        self._lock = asyncio.Lock()
        self.reloads = 0
        self.rejections = 0
        self.last_error: list[str] = []

    def load_initial(self) -> None:
        """At start: an invalid directory is a start-up error (raises policies.PolicyLoadError)."""
        fingerprint = directory_fingerprint(self.directory)
        self.current = policies.load_directory(self.directory)
        self._checked = (self.directory, fingerprint)
        log.info("policies loaded from %s (digest %s)", self.directory, self.current.digest[:12])

    async def check_now(self) -> bool:
        """Reloads if the directory changed. True if a new set came into force."""
        # The watcher and a SIGHUP reload both call this: one load at a time, so an older, slower load can never
        # land after (and over) a newer one.
        async with self._lock:
            return await self._check()

    async def _check(self) -> bool:
        directory = self.directory
        fingerprint = directory_fingerprint(directory)
        if (directory, fingerprint) == self._checked:
            return False
        try:
            candidate = await asyncio.to_thread(policies.load_directory, directory)
            errors: list[str] = []
        except policies.PolicyLoadError as err:
            candidate, errors = None, [str(d) for d in err.diagnostics]
        except Exception as exc:  # noqa: BLE001 - a loader bug must refuse the change, not skip the refusal
            log.exception("policy load failed unexpectedly")
            candidate, errors = None, [f"{directory}: policy load failed unexpectedly: {type(exc).__name__}: "
                                       f"{str(exc)[:200]}"]
        if directory != self.directory or directory_fingerprint(directory) != fingerprint:
            # Re-pointed (SIGHUP) or edited while loading: this result is already stale; the next check loads
            # what is there now. Nothing is recorded, so that check does not skip it.
            return False
        # Recorded only now: a load that raised is still a refusal, and the same files are not retried every tick.
        self._checked = (directory, fingerprint)
        if candidate is None:
            await self._reject(directory, errors)
            return False
        self.last_error = []
        if self.current is not None and candidate.digest == self.current.digest:
            return False
        self.current = candidate
        self.reloads += 1
        log.info("policies reloaded from %s (digest %s)", directory, candidate.digest[:12])
        return True

    async def _reject(self, directory: Path, errors: list[str]) -> None:
        self.rejections += 1
        self.last_error = errors
        log.error("policy change refused, previous set stays in force: %s", "; ".join(errors))
        if self.on_rejected is not None:
            await self.on_rejected(str(directory), errors)

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check_now()
            except Exception:
                log.exception("policy reload failed unexpectedly; previous set stays in force")
