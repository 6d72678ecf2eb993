"""`ztgate run --workers N`: one supervisor process and N gateway worker processes on the same ports.

mitmproxy runs one event loop on one core (about 1,000-1,300 requests/s); ztgate scales out with processes.
Each worker is a whole Gateway (`ztgate run --worker I`, started by this module) binding every listener with
SO_REUSEPORT, so the kernel spreads new connections over the workers. They act as one through the shared Redis
store (sessions, revocations, broadcasts), which is why `store: memory://` is refused here.

The supervisor holds no sockets and serves nothing: it starts the workers, restarts one that dies (with
exponential backoff, reset once a worker has lived a while), forwards SIGHUP (reload) and SIGTERM/SIGINT
(graceful drain; a second one ends the drain at once) and, if a worker outlives its drain deadline by a margin,
kills it. It exits 0 when every worker shut down cleanly.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

from .config import Config, ConfigInvalid, load

log = logging.getLogger("ztgate.supervisor")

_MIN_BACKOFF = 0.5
_MAX_BACKOFF = 30.0
_STABLE_AFTER = 10.0  # a worker that lived this long resets its backoff
_KILL_MARGIN = 10.0  # seconds past the drain deadline before a worker is killed
_TICK = 0.1


def worker_problems(cfg: Config, workers: int) -> list[str]:
    """Why this config cannot run as `workers` processes (empty: it can)."""
    problems = []
    if workers < 2:
        return problems
    if not cfg.store.is_redis:
        problems.append(f"{cfg.source}: store: {cfg.store.url} cannot be shared by {workers} worker processes "
                        "(each would have its own sessions and revocations)\n"
                        "    hint: use store: redis://HOST:6379/0, or run without --workers")
    for listener in cfg.listeners:
        if listener.address.port == 0:
            problems.append(f"{cfg.source}: listener {listener.address} uses port 0; workers share fixed ports\n"
                            "    hint: give the listener a port number")
    for route in cfg.routes:
        if route.listen is not None and route.listen.port == 0:
            problems.append(f"{cfg.source}: route {route.name!r} listens on port 0; workers share fixed ports")
    return problems


@dataclass
class WorkerSlot:
    index: int
    proc: subprocess.Popen | None = None
    started: float = 0.0
    failures: int = 0
    start_at: float = 0.0
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)


def _die_with_parent() -> None:
    """Runs in the child before exec: if the supervisor is killed outright, its workers get SIGTERM."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Supervisor:
    def __init__(self, config_path: str, workers: int, *, grace: float,
                 command: Sequence[str] | None = None) -> None:
        self.config_path = config_path
        self.grace = grace
        self.slots = [WorkerSlot(i) for i in range(workers)]
        self.command = list(command or [sys.executable, "-m", "gateway.cli.main", "run", "--config", config_path])
        self._stop_signals = 0
        self._forwarded_stops = 0
        self._reloads = 0

    # ------------------------------------------------------------------ signals

    def _on_stop(self, signum: int, frame: object) -> None:
        self._stop_signals += 1

    def _on_reload(self, signum: int, frame: object) -> None:
        self._reloads += 1

    # ------------------------------------------------------------------ workers

    def _start(self, slot: WorkerSlot) -> None:
        # A process group of its own: a terminal's Ctrl-C reaches the supervisor only, which forwards it once
        # (a second signal would end the worker's drain at once).
        slot.proc = subprocess.Popen([*self.command, "--worker", str(slot.index)], preexec_fn=_die_with_parent,
                                     process_group=0)
        slot.started = time.monotonic()
        log.info("worker %d started (pid %d)", slot.index, slot.proc.pid)

    def _alive(self) -> list[WorkerSlot]:
        return [s for s in self.slots if s.proc is not None and s.proc.poll() is None]

    def _signal_all(self, signum: int) -> None:
        for slot in self._alive():
            try:
                slot.proc.send_signal(signum)  # type: ignore[union-attr]
            except ProcessLookupError:
                pass

    def _reap(self, now: float) -> None:
        for slot in self.slots:
            if slot.proc is None or slot.proc.poll() is None:
                continue
            code = slot.proc.returncode
            slot.exit_codes.append(code)
            lived = now - slot.started
            slot.failures = 0 if lived >= _STABLE_AFTER else slot.failures + 1
            delay = 0.0 if slot.failures == 0 else min(_MAX_BACKOFF, _MIN_BACKOFF * 2 ** (slot.failures - 1))
            log.error("worker %d (pid %d) exited with %s after %.1f s; restarting in %.1f s",
                      slot.index, slot.proc.pid, _describe(code), lived, delay)
            slot.proc, slot.start_at = None, now + delay
            slot.restarts += 1

    # ------------------------------------------------------------------ main loop

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_reload)
        try:
            log.info("supervisor (pid %d) starting %d workers", os.getpid(), len(self.slots))
            for slot in self.slots:
                self._start(slot)
            reloads_done = 0
            while not self._stop_signals:
                time.sleep(_TICK)
                now = time.monotonic()
                if self._reloads != reloads_done:
                    reloads_done = self._reloads
                    log.info("SIGHUP: asking %d worker(s) to reload", len(self._alive()))
                    self._signal_all(signal.SIGHUP)
                self._reap(now)
                for slot in self.slots:
                    if slot.proc is None and now >= slot.start_at and not self._stop_signals:
                        self._start(slot)
            return self._shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _shutdown(self) -> int:
        log.info("shutting down: draining %d worker(s) for up to %.0f s", len(self._alive()), self.grace)
        deadline = time.monotonic() + self.grace + _KILL_MARGIN
        while self._alive() and time.monotonic() < deadline:
            if self._forwarded_stops < self._stop_signals:  # a second signal ends the workers' drain at once
                self._forwarded_stops = self._stop_signals
                self._signal_all(signal.SIGTERM)
            time.sleep(_TICK)
        clean = True
        for slot in self.slots:
            if slot.proc is None:
                continue
            if slot.proc.poll() is None:
                log.error("worker %d (pid %d) outlived its drain deadline; killing it", slot.index, slot.proc.pid)
                slot.proc.kill()
                slot.proc.wait(5)
                clean = False
            elif slot.proc.returncode != 0:
                log.error("worker %d exited with %s", slot.index, _describe(slot.proc.returncode))
                clean = False
        log.info("supervisor done")
        return 0 if clean else 1


def _describe(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def supervise(config_path: str, workers: int) -> int:
    """`ztgate run --config FILE --workers N`; returns the process exit code."""
    try:
        cfg = load(config_path)
    except ConfigInvalid as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 2
    problems = worker_problems(cfg, workers)
    if problems:
        for problem in problems:
            print(f"ztgate: cannot run {workers} workers: {problem}", file=sys.stderr)
        return 2
    return Supervisor(config_path, workers, grace=cfg.shutdown_grace).run()
