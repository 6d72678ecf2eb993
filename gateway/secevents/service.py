"""SecurityEvents: what the gateway calls. emit_* persist to the outbox and return; workers deliver in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from importlib import metadata

from . import ocsf
from .config import EventsConfig
from .deadletters import dead_letters_of
from .delivery import SinkWorker
from .outbox import FileOutbox, Outbox, open_outbox
from .sinks import make_sink

log = logging.getLogger("ztgate.secevents")
COMPACT_EVERY = 5.0


def product_version() -> str:
    try:
        return metadata.version("ztgate")
    except metadata.PackageNotFoundError:
        return "0.0.0"


class SecurityEvents:
    def __init__(self, cfg: EventsConfig, instance: str, redis_url: str | None, *, spool_dir: str | None = None):
        self.cfg = cfg
        self.instance = instance
        self.redis_url = redis_url
        self.version = product_version()
        self.outbox: Outbox = open_outbox(cfg.outbox, redis_url, spool_dir=spool_dir)
        owner = f"{instance}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.dead_letters = dead_letters_of(self.outbox)
        self.workers = [SinkWorker(make_sink(s, instance=instance, version=self.version), self.outbox, owner=owner,
                                   min_backoff=s.min_backoff, max_backoff=s.max_backoff,
                                   dead_letter_after=s.dead_letter_after, dead_letters=self.dead_letters)
                        for s in cfg.sinks]
        self._tasks: list[asyncio.Task] = []
        self._stopping = asyncio.Event()

    # ------------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._tasks:
            return
        resume = getattr(self.outbox, "resume", None)
        if resume is not None:
            resume()  # events spooled during a Redis outage before a restart
        for w in self.workers:
            self._tasks.append(asyncio.create_task(w.run(), name=f"ztgate-sink-{w.sink.name}"))
        self._tasks.append(asyncio.create_task(self._compact_loop(), name="ztgate-outbox-compact"))

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        for w in self.workers:
            w.stop()
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(BaseException):
                    await t
            self._tasks = []
        for w in self.workers:
            with contextlib.suppress(Exception):
                await w.sink.close()
        await self.outbox.close()

    async def _compact_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), COMPACT_EVERY)
            try:
                if isinstance(self.outbox, FileOutbox):
                    cursors = [int(w.status.cursor or 0) for w in self.workers]
                    await self.outbox.compact(str(min(cursors) if cursors else self.outbox.head_seq))
                else:
                    await self._compact_redis()
            except Exception as err:  # the store is down or busy: the next round tries again
                log.debug("events outbox compaction skipped: %s", err)

    async def _compact_redis(self) -> None:
        """Trims what every sink has delivered, then warns when the stream nears its cap. The warning matters most
        when nothing can be trimmed (a sink that never delivered), so it does not depend on the trim."""
        await self._trim_delivered()
        await self._warn_near_cap()

    async def _trim_delivered(self) -> None:
        """The cursors come from the store, not from this process's workers: another replica may hold a sink's
        lease. Replicas are expected to share one events config (same sinks)."""
        if not self.workers:
            return  # nothing to deliver to: the stream is bounded by its cap alone
        positions = []
        for w in self.workers:
            state = await self.outbox.load_state(w.sink.name) or {}
            if not state.get("pos"):
                return  # a sink that has delivered nothing yet still needs the whole stream
            positions.append(tuple(int(x) for x in str(state["pos"]).split("-")))
        await self.outbox.compact("-".join(str(x) for x in min(positions)))

    async def _warn_near_cap(self) -> None:
        length, cap = await self.outbox.length(), self.cfg.outbox.maxlen
        if length > 0.8 * cap:
            log.warning("events outbox %s holds %d undelivered-or-recent entries, near its cap of %d: past the "
                        "cap the oldest are dropped; check the sinks (ztgate events status)", self.cfg.outbox.stream,
                        length, cap)

    # ------------------------------------------------------------------------------------------ emitting
    async def _append(self, kind: str, sid: str | None, event: dict) -> str:
        env = {"id": event["metadata"]["uid"], "kind": kind, "sid": sid, "enqueued_ms": int(time.time() * 1000),
               "event": event}
        await self.outbox.append(env)
        return env["id"]

    async def emit_decision(self, decision: dict, session: dict, assessment: dict | None,
                            upstream: str | None) -> str | None:
        """Persist the OCSF Detection Finding for a non-allow decision; returns its event id (None when the
        decision produces no event: `allow`, or a shadow decision with include_shadow off)."""
        if decision.get("action") not in ocsf.ACTIONS:
            return None
        if decision.get("shadow") and not self.cfg.include_shadow:
            return None
        event = ocsf.detection_finding(event_id=ocsf.new_event_id(), decision=decision, session=session,
                                       assessment=assessment, upstream=upstream, instance=self.instance,
                                       product_version=self.version, now=time.time())
        return await self._append("finding", str(session.get("sid", "")) or None, event)

    async def emit_logoff(self, session: dict, reason: str) -> str:
        event = ocsf.logoff(event_id=ocsf.new_event_id(), session=session, reason=reason, instance=self.instance,
                            product_version=self.version, now=time.time())
        return await self._append("logoff", str(session.get("sid", "")) or None, event)

    async def emit_mfa_factor(self, session: dict, *, accepted: bool, detail: str, factor: dict) -> str:
        event = ocsf.mfa_factor_enable(event_id=ocsf.new_event_id(), session=session, accepted=accepted, detail=detail,
                                       factor=factor, instance=self.instance, product_version=self.version,
                                       now=time.time())
        return await self._append("account_change", str(session.get("sid", "")) or None, event)

    async def emit_account_lock(self, account: dict, *, locked: bool, reason: str, by: str) -> str:
        event = ocsf.account_lock(event_id=ocsf.new_event_id(), account=account, locked=locked, reason=reason, by=by,
                                  instance=self.instance, product_version=self.version, now=time.time())
        return await self._append("account_change", None, event)

    async def emit_policy_rejected(self, directory: str, diagnostics: list[str]) -> str:
        event = ocsf.policy_rejected(event_id=ocsf.new_event_id(), directory=directory, diagnostics=diagnostics,
                                     instance=self.instance, product_version=self.version, now=time.time())
        return await self._append("policy_rejected", None, event)

    # ------------------------------------------------------------------------------------------ status
    def status(self) -> dict:
        now = time.time()
        out = {"instance": self.instance, "outbox": {"kind": self.outbox.kind}, "sinks": []}
        if isinstance(self.outbox, FileOutbox):
            out["outbox"].update(path=str(self.outbox.dir), head=self.outbox.head_seq,
                                 corrupt_records=self.outbox.corrupt_records)
        else:
            out["outbox"].update(stream=self.cfg.outbox.stream,
                                 corrupt_records=getattr(self.outbox, "corrupt_records", 0))
            spooled = getattr(self.outbox, "spooled", None)
            if spooled is not None:  # events waiting on local disk for Redis to come back
                out["outbox"].update(spooled=spooled)
        for w in self.workers:
            if isinstance(self.outbox, FileOutbox):
                w.status.backlog = max(0, self.outbox.head_seq - int(w.status.cursor or 0))
            out["sinks"].append(w.status.as_dict(now))
        out["backlog_total"] = sum(s["backlog"] for s in out["sinks"])
        out["dead_letters_total"] = sum(s["dead_letters"] for s in out["sinks"])
        out["max_lag_seconds"] = max((s["lag_seconds"] for s in out["sinks"]), default=0.0)
        return out
