"""The outbox: every event is made durable here before any sink sees it.

Two implementations with one interface:
- FileOutbox (embedded default): append-only JSONL segments in a directory, fsync'd before `append` returns
  (concurrent appends share one write+fsync: group commit). Per-sink state files sit next to the segments.
- RedisOutbox (production): a Redis stream (XADD acknowledged = durable, per Redis' persistence settings);
  per-sink state in Redis keys; a lease key so that one gateway instance at a time delivers to each sink.
  SpooledRedisOutbox adds a local spool (a FileOutbox per process) for Redis outages: an event Redis cannot take is
  made durable on disk and moved into the stream, in order, when Redis is back.

Positions are strings: the file outbox's sequence number, or the stream entry id.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("ztgate.events")

SEGMENT_PREFIX = "seg-"
SEGMENT_SUFFIX = ".jsonl"
# The largest record the file outbox writes or reads. A record is one line; the reader buffers one line at a time, so
# this bounds its memory. Events are far smaller (their builders cap what they carry); a larger one is refused.
MAX_RECORD_BYTES = 16 * 1024 * 1024
READ_CHUNK = 1 << 20
RECORD_FRAMING = 32  # what the writer adds to an encoded envelope: the seq field and the newline


@dataclass(frozen=True, slots=True)
class Record:
    pos: str          # outbox position
    id: str           # stable event id: the delivery id receivers de-duplicate on
    kind: str         # finding | logoff | account_change | policy_rejected
    sid: str | None
    enqueued_ms: int
    event: dict

    @staticmethod
    def from_envelope(pos: str, env: dict) -> "Record":
        return Record(pos=pos, id=env["id"], kind=env.get("kind", ""), sid=env.get("sid"),
                      enqueued_ms=int(env.get("enqueued_ms", 0)), event=env["event"])


class OutboxBusy(RuntimeError):
    """Another process owns this file outbox."""


class OutboxUnavailable(RuntimeError):
    """The event could not be made durable (disk error, Redis down)."""


class Reader(Protocol):
    async def read(self, limit: int, timeout: float) -> list[Record]: ...


class Outbox(Protocol):
    kind: str

    async def append(self, envelope: dict) -> str: ...
    def reader(self, after: str | None) -> Reader: ...
    async def backlog(self, after: str | None, cap: int = 100_000) -> tuple[int, int | None]: ...
    async def load_state(self, sink: str) -> dict | None: ...
    async def save_state(self, sink: str, state: dict) -> None: ...
    async def acquire_lease(self, sink: str, owner: str, ttl: float) -> bool: ...
    async def renew_lease(self, sink: str, owner: str, ttl: float) -> bool: ...
    async def release_lease(self, sink: str, owner: str) -> None: ...
    async def compact(self, min_pos: str | None) -> None: ...
    async def tail(self, n: int) -> list[Record]: ...
    async def head(self) -> str | None: ...
    async def close(self) -> None: ...


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# ---------------------------------------------------------------------------------------------- file outbox


def _segment_name(first: int) -> str:
    return f"{SEGMENT_PREFIX}{first:012d}{SEGMENT_SUFFIX}"


def _segments(directory: Path) -> list[tuple[int, Path]]:
    out = []
    for p in directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"):
        try:
            out.append((int(p.name[len(SEGMENT_PREFIX):-len(SEGMENT_SUFFIX)]), p))
        except ValueError:
            continue
    return sorted(out)


class FileOutbox:
    kind = "file"

    def __init__(self, path: str | os.PathLike, *, segment_bytes: int = 8 * 1024 * 1024, readonly: bool = False):
        self.dir = Path(path)
        self.segment_bytes = segment_bytes
        self.readonly = readonly
        self.state_dir = self.dir / "cursors"
        self._lock_file = None
        if not readonly:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.state_dir.mkdir(exist_ok=True)
            self._lock_file = open(self.dir / "lock", "a")
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock_file.close()
                raise OutboxBusy(f"{self.dir} is in use by another ztgate process") from None
        self._head = self._recover()
        self._fh = None
        self._active_first = 0
        self._active_size = 0
        self._pending: list[tuple[bytes, asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._writer: asyncio.Task | None = None
        self._closed = False
        self.corrupt_records = 0  # lines readers passed over because they are not records: see report_corrupt
        self._corrupt_seen: set[tuple[str, int]] = set()

    # -- recovery: a torn last line (crash mid-write, never acknowledged) is cut off
    def _recover(self) -> int:
        segs = _segments(self.dir) if self.dir.exists() else []
        if not segs:
            return 0
        first, path = segs[-1]
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data) and not self.readonly:
            with open(path, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
        lines = data[:end].splitlines()
        # one record a line, numbered on: the head is the last readable record's seq plus the lines after it. A
        # corrupt last line (a bad disk block) once stopped the gateway from starting; its number stays used, so
        # no new record takes a position a sink may already have passed
        for back, line in enumerate(reversed(lines)):
            rec = _parse_line(line)
            if rec is not None:
                if back:
                    log.error("events outbox: the last %d line(s) of %s are not records; they are skipped", back, path)
                return int(rec.pos) + back
        if lines:
            log.error("events outbox: no line of %s is a record; numbering goes on after its %d lines", path,
                      len(lines))
        return first - 1 + len(lines)

    def _open_active(self) -> None:
        segs = _segments(self.dir)
        if segs and segs[-1][1].stat().st_size < self.segment_bytes:
            self._active_first, path = segs[-1]
        else:
            self._active_first = self._head + 1
            path = self.dir / _segment_name(self._active_first)
        self._fh = open(path, "ab")
        self._active_size = self._fh.tell()
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_batch(self, lines: list[bytes]) -> None:
        if self._fh is None:
            self._open_active()
        if self._active_size >= self.segment_bytes:
            self._fh.close()
            self._active_first = self._head + 1
            self._fh = open(self.dir / _segment_name(self._active_first), "ab")
            self._active_size = 0
            self._fsync_dir()
        data = b"".join(lines)
        start = self._active_size
        try:
            self._fh.write(data)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError:
            # Leave no half-written line behind: the batch is reported as failed and will not be read.
            with contextlib.suppress(OSError):
                self._fh.truncate(start)
                self._fh.seek(start)
            raise
        self._active_size = start + len(data)

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                if self._closed:
                    return
                continue
            lines, futures = [], []
            seq = self._head
            for env_bytes, fut in batch:
                seq += 1
                lines.append(b'{"seq":%d,' % seq + env_bytes[1:] + b"\n")
                futures.append((fut, str(seq)))
            try:
                await asyncio.to_thread(self._write_batch, lines)
            except OSError as err:
                for fut, _ in futures:
                    if not fut.done():
                        fut.set_exception(OutboxUnavailable(f"outbox write failed: {err}"))
                continue
            self._head = seq
            for fut, pos in futures:
                if not fut.done():
                    fut.set_result(pos)
            self._changed.set()
            self._changed = asyncio.Event()

    async def append(self, envelope: dict) -> str:
        if self.readonly or self._closed:
            raise OutboxUnavailable("outbox is closed")
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name="ztgate-outbox-writer")
        data = _encode(envelope)
        if len(data) + RECORD_FRAMING > MAX_RECORD_BYTES:  # refused here, where the caller hears of it
            raise OutboxUnavailable(f"event {envelope.get('id')} is {len(data)} bytes, over the outbox's "
                                    f"{MAX_RECORD_BYTES}-byte record limit")
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((data, fut))
        self._wake.set()
        return await fut

    def reader(self, after: str | None) -> "FileReader":
        return FileReader(self, int(after) if after else 0)

    async def head(self) -> str | None:
        return str(self._head) if self._head else None

    @property
    def head_seq(self) -> int:
        return self._head

    async def backlog(self, after: str | None, cap: int = 100_000) -> tuple[int, int | None]:
        after_seq = int(after) if after else 0
        count = max(0, self._head - after_seq)
        if count == 0:
            return 0, None
        first = await self.reader(after).read(1, 0)
        return count, (first[0].enqueued_ms if first else None)

    def _state_path(self, sink: str) -> Path:
        return self.state_dir / f"{sink}.json"

    def read_state(self, sink: str) -> dict | None:
        try:
            return json.loads(self._state_path(sink).read_text())
        except (FileNotFoundError, ValueError):
            return None

    async def load_state(self, sink: str) -> dict | None:
        return self.read_state(sink)

    def _save_state_sync(self, sink: str, state: dict) -> None:
        p = self._state_path(sink)
        tmp = p.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(_encode(state))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)

    async def save_state(self, sink: str, state: dict) -> None:
        await asyncio.to_thread(self._save_state_sync, sink, state)

    async def acquire_lease(self, sink: str, owner: str, ttl: float) -> bool:
        return True  # the directory lock already makes this process the only deliverer

    async def renew_lease(self, sink: str, owner: str, ttl: float) -> bool:
        return True

    async def release_lease(self, sink: str, owner: str) -> None:
        return None

    def _compact_sync(self, min_seq: int) -> None:
        segs = _segments(self.dir)
        for (first, path), (next_first, _) in zip(segs, segs[1:]):
            if next_first - 1 <= min_seq and first != self._active_first:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    async def compact(self, min_pos: str | None) -> None:
        await asyncio.to_thread(self._compact_sync, int(min_pos) if min_pos else 0)

    async def tail(self, n: int) -> list[Record]:
        segs = _segments(self.dir)
        out: list[Record] = []
        for _, path in reversed(segs):
            lines = [l for l in path.read_bytes().split(b"\n") if l]
            recs = [_parse_line(l) for l in lines]
            out = [r for r in recs if r is not None and int(r.pos) <= self._head] + out
            if len(out) >= n:
                break
        return out[-n:] if n else []

    def report_corrupt(self, path: Path, offset: int, size: int, why: str) -> None:
        """A line readers pass over: logged as an error and counted once per place, however many readers (and
        backlog probes) meet it, so that a lost record is never silent."""
        where = (path.name, offset)
        if where in self._corrupt_seen:
            return
        self._corrupt_seen.add(where)
        self.corrupt_records += 1
        log.error("events outbox: %s at byte %d (%d bytes) is not a deliverable record (%s); it is skipped and "
                  "the records after it are delivered", path, offset, size, why)

    def refresh(self) -> None:
        """Read-only users (the CLI) pick up what the gateway appended since."""
        self._head = self._recover()

    async def wait_changed(self, timeout: float) -> None:
        changed = self._changed
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer
            self._writer = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def _parse_line(line: bytes) -> Record | None:
    try:
        env = json.loads(line)
        return Record.from_envelope(str(env["seq"]), env)
    except (ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True, slots=True)
class _Line:
    """One step of a segment scan: a whole line (`data`), an oversized one (`data` None), or nothing complete yet."""
    size: int              # bytes the line takes, newline included; 0 when no complete line is there yet
    data: bytes | None


def _next_line(f: Any) -> _Line:
    """The line at `f`'s position, read up to its newline however long it is, but held in memory only up to
    MAX_RECORD_BYTES: a longer one is measured and skipped, not buffered."""
    line = f.readline(MAX_RECORD_BYTES + 1)
    if line.endswith(b"\n"):
        return _Line(len(line), line)
    if len(line) <= MAX_RECORD_BYTES:
        return _Line(0, None)  # end of file inside a line: still being written (or torn)
    size = len(line)
    while True:
        chunk = f.readline(READ_CHUNK)
        size += len(chunk)
        if chunk.endswith(b"\n"):
            return _Line(size, None)
        if not chunk:
            return _Line(0, None)


class FileReader:
    """Reads records after a position, in order, across segments (survives compaction of passed segments).

    A line that cannot be a record (oversized, or not JSON: corruption) is reported and counted on the outbox, then
    passed over; the records after it are still read."""

    def __init__(self, outbox: FileOutbox, after: int):
        self.outbox = outbox
        self.after = after
        self._path: Path | None = None
        self._offset = 0

    def _locate(self, segs: list[tuple[int, Path]]) -> None:
        idx = 0
        for i, (first, _) in enumerate(segs):
            if first <= self.after + 1:
                idx = i
        self._path, self._offset = segs[idx][1], 0

    def _scan(self, out: list[Record], limit: int, upto: int) -> str:
        """Reads the current segment from the offset into `out`: "done" (limit reached, or the next record is not
        yet acknowledged), "end" (end of the segment), "partial" (it ends inside a line)."""
        with open(self._path, "rb") as f:
            f.seek(self._offset)
            while len(out) < limit:
                line = _next_line(f)
                if not line.size:
                    return "end" if os.fstat(f.fileno()).st_size <= self._offset else "partial"
                rec = _parse_line(line.data) if line.data is not None else None
                if rec is not None and int(rec.pos) > upto:
                    return "done"  # written but not yet fsync'd: not ours to deliver yet
                if rec is None:
                    self.outbox.report_corrupt(self._path, self._offset, line.size,
                                               "longer than the record limit" if line.data is None else "not a record")
                self._offset += line.size
                if rec is not None and int(rec.pos) > self.after:
                    out.append(rec)
                    self.after = int(rec.pos)
            return "done"

    def _read_sync(self, limit: int, upto: int) -> list[Record]:
        out: list[Record] = []
        while len(out) < limit and self.after < upto:
            segs = _segments(self.outbox.dir)
            if not segs:
                return out
            if self._path is None or not self._path.exists():
                self._locate(segs)
            found = self._scan(out, limit, upto)
            if found == "done":
                return out
            # Only a segment that was complete before this scan is left: the writer starts a new one after the last
            # write to the old one, so a later segment listed before the scan means this one has nothing more coming.
            later = [p for _, p in segs if p.name > self._path.name]
            if not later:
                return out
            if found == "partial":  # a complete segment ending inside a line: a torn write left there
                size = self._path.stat().st_size - self._offset
                self.outbox.report_corrupt(self._path, self._offset, size, "torn line at the end of the segment")
            self._path, self._offset = later[0], 0
        return out

    async def read(self, limit: int, timeout: float) -> list[Record]:
        deadline = time.monotonic() + timeout
        while True:
            if self.outbox.readonly:
                self.outbox.refresh()
            upto = self.outbox.head_seq
            if self.after < upto:
                recs = await asyncio.to_thread(self._read_sync, limit, upto)
                if recs:
                    return recs
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if self.outbox.readonly:
                await asyncio.sleep(min(0.25, remaining))
            else:
                await self.outbox.wait_changed(remaining)


# ---------------------------------------------------------------------------------------------- Redis outbox


class RedisOutbox:
    kind = "redis"

    def __init__(self, url: str, *, stream: str = "ztgate:outbox", maxlen: int = 1_000_000):
        import redis.asyncio as aioredis

        self.url = url
        self.stream = stream
        self.maxlen = maxlen
        self.redis = aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._blocking = aioredis.from_url(url, socket_connect_timeout=5)
        self.corrupt_records = 0  # stream entries passed over because they are not records (logged once each)
        self._corrupt_seen: set[str] = set()

    async def append(self, envelope: dict) -> str:
        import redis.exceptions as rex

        data = _encode(envelope)
        last: Exception | None = None
        for attempt in range(3):  # ride out a Redis failover/restart of a second or two
            try:
                pos = await self.redis.xadd(self.stream, {"r": data}, maxlen=self.maxlen, approximate=True)
                return pos.decode() if isinstance(pos, bytes) else str(pos)
            except (rex.RedisError, OSError) as err:  # unreachable, or refusing writes (maxmemory, read-only replica)
                last = err
                await asyncio.sleep(0.2 * (attempt + 1))
        raise OutboxUnavailable(f"Redis outbox unavailable: {last}")

    def reader(self, after: str | None) -> "RedisReader":
        return RedisReader(self, after or "0-0")

    def _records(self, entries: list) -> list[Record]:
        out = []
        for entry_id, fields in entries:
            eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            raw = fields.get(b"r") or fields.get("r")
            try:
                out.append(Record.from_envelope(eid, json.loads(raw)))
            except (TypeError, ValueError, KeyError):
                # written by something else, or damaged: passed over, but never silently (once per entry, however
                # many readers and backlog probes meet it)
                if eid not in self._corrupt_seen and len(self._corrupt_seen) < 100_000:
                    self._corrupt_seen.add(eid)
                    self.corrupt_records += 1
                    log.error("events outbox: stream %s entry %s is not a deliverable record; it is skipped and the "
                              "entries after it are delivered", self.stream, eid)
        return out

    async def backlog(self, after: str | None, cap: int = 100_000) -> tuple[int, int | None]:
        entries = await self.redis.xrange(self.stream, min=f"({after}" if after else "-", max="+", count=cap)
        recs = self._records(entries)
        return len(recs), (recs[0].enqueued_ms if recs else None)

    def _key(self, sink: str, what: str) -> str:
        return f"{self.stream}:{what}:{sink}"

    async def load_state(self, sink: str) -> dict | None:
        raw = await self.redis.get(self._key(sink, "sink"))
        return json.loads(raw) if raw else None

    async def save_state(self, sink: str, state: dict) -> None:
        await self.redis.set(self._key(sink, "sink"), _encode(state))

    # One script each, so that nothing happens between reading the holder and setting the expiry: with a GET and then
    # a PEXPIRE, a lease that expired in between and was taken by another replica would be extended as if ours.
    # take the lease if free, or extend it if already ours
    _ACQUIRE = ("local cur = redis.call('get', KEYS[1]) "
                "if not cur then redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2]) return 1 end "
                "if cur == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end return 0")
    # extend the lease only if still ours: one that lapsed is not retaken, since another replica may have held it
    # meanwhile and moved the cursor, and this worker's position would be stale
    _RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end "
              "return 0")

    async def acquire_lease(self, sink: str, owner: str, ttl: float) -> bool:
        return bool(await self.redis.eval(self._ACQUIRE, 1, self._key(sink, "lease"), owner, int(ttl * 1000)))

    async def renew_lease(self, sink: str, owner: str, ttl: float) -> bool:
        return bool(await self.redis.eval(self._RENEW, 1, self._key(sink, "lease"), owner, int(ttl * 1000)))

    # delete the lease only if it is still ours: it may have expired and been taken by another replica
    _RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

    async def release_lease(self, sink: str, owner: str) -> None:
        """A stopping gateway hands its sinks over at once instead of after the lease's TTL."""
        await self.redis.eval(self._RELEASE, 1, self._key(sink, "lease"), owner)

    async def compact(self, min_pos: str | None) -> None:
        """Drops the entries before `min_pos`, the slowest sink's last delivered position (that entry stays)."""
        if min_pos:
            await self.redis.xtrim(self.stream, minid=min_pos, approximate=False)

    async def length(self) -> int:
        return int(await self.redis.xlen(self.stream))

    async def tail(self, n: int) -> list[Record]:
        entries = await self.redis.xrevrange(self.stream, max="+", min="-", count=n)
        return list(reversed(self._records(entries)))

    async def head(self) -> str | None:
        entries = await self.redis.xrevrange(self.stream, max="+", min="-", count=1)
        recs = self._records(entries)
        return recs[0].pos if recs else None

    async def close(self) -> None:
        await self.redis.aclose()
        await self._blocking.aclose()


class RedisReader:
    def __init__(self, outbox: RedisOutbox, after: str):
        self.outbox = outbox
        self.after = after

    async def read(self, limit: int, timeout: float) -> list[Record]:
        block = max(1, int(timeout * 1000)) if timeout > 0 else None
        reply = await self.outbox._blocking.xread({self.outbox.stream: self.after}, count=limit, block=block)
        recs: list[Record] = []
        for _stream, entries in reply or []:
            recs.extend(self.outbox._records(entries))
        if recs:
            self.after = recs[-1].pos
        return recs


# ---------------------------------------------------------------------------------------------- spool for outages

SPOOL_CURSOR = "redis-forwarder"
SPOOL_RETRY_MAX_S = 5.0
ORPHAN_SWEEP_S = 30.0  # how often a process looks for slots that no live process holds and still hold events


def _cursor_of(spool: FileOutbox) -> int:
    """How far the Redis forwarder got in this spool (0: nothing forwarded, or an unreadable cursor)."""
    try:
        return int((spool.read_state(SPOOL_CURSOR) or {}).get("pos", 0))
    except (TypeError, ValueError):
        return 0


def claim_spool(root: str | os.PathLike) -> FileOutbox:
    """This process's spool: the lowest-numbered slot under `root` no live process holds (a FileOutbox takes an
    exclusive lock), so `--workers N` processes get N slots and a restarted one takes over a slot and what it holds."""
    base = Path(root)
    for slot in range(1024):
        try:
            return FileOutbox(base / str(slot))
        except OutboxBusy:
            continue
    raise OutboxUnavailable(f"no free events spool slot under {base}")


class SpooledRedisOutbox(RedisOutbox):
    """The Redis outbox, with a local spool so that a Redis outage loses no event.

    An event Redis does not take (after RedisOutbox's own retries) is appended to this process's spool, fsync'd, and
    a forwarder moves spooled events into the stream in their order as soon as Redis answers, advancing a cursor
    kept beside the spool (at-least-once: an event whose XADD succeeded just before a crash may be sent twice; its
    id lets receivers de-duplicate). While the spool holds events, new ones queue behind them, so order is kept.

    A slot that no live process holds but that still holds events (its gateway was restarted with fewer workers, or
    a worker died for good) is adopted: every process sweeps the spool root at start and every ORPHAN_SWEEP_S, takes
    such a slot's lock, moves its events into the stream from its own cursor, and lets it go. The lock decides who
    adopts; a worker that starts later takes the slot as its own once it is free again."""

    def __init__(self, url: str, *, stream: str = "ztgate:outbox", maxlen: int = 1_000_000,
                 spool_dir: str | os.PathLike):
        super().__init__(url, stream=stream, maxlen=maxlen)
        self.spool = claim_spool(spool_dir)
        self.forwarded = _cursor_of(self.spool)
        self._forwarder: asyncio.Task | None = None
        self._sweeper: asyncio.Task | None = None
        self._closing = False

    @property
    def spooled(self) -> int:
        """Events in the spool not yet moved into the stream."""
        return max(0, self.spool.head_seq - self.forwarded)

    async def append(self, envelope: dict) -> str:
        if not self.spooled:
            try:
                return await super().append(envelope)
            except OutboxUnavailable as err:
                log.error("events outbox: %s; spooling events to %s until it is back", err, self.spool.dir)
        seq = await self.spool.append(envelope)  # OutboxUnavailable if the disk fails too: the caller logs it
        self.resume()
        return f"spool-{seq}"

    def resume(self) -> None:
        """Starts the forwarder if the spool holds events (also after a restart) and none is running, and the sweep
        for orphaned slots once."""
        if self._closing:
            return
        if self.spooled and self._forwarder is None:
            self._forwarder = asyncio.create_task(self._forward(), name="ztgate-outbox-spool")
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_orphans(), name="ztgate-outbox-orphans")

    async def _forward(self) -> None:
        reader = self.spool.reader(str(self.forwarded))
        try:
            while not self._closing:
                if not self.spooled:
                    return  # no await between this check and the finally: an append now starts a new forwarder
                try:
                    records = await reader.read(100, 0)
                    for rec in records:
                        if not await self._xadd_until_taken(rec):
                            return
                        self.forwarded = int(rec.pos)
                    if records:  # the cursor is saved per batch: a crash mid-batch resends at most that batch
                        await self.spool.save_state(SPOOL_CURSOR, {"pos": str(self.forwarded)})
                        await self.spool.compact(str(self.forwarded))
                        if not self.spooled:
                            log.info("events outbox: spooled events moved into the Redis stream")
                except Exception as err:  # e.g. the spool's disk: what is spooled stays there, try again
                    log.error("events outbox: forwarding spooled events failed: %s; retrying", err)
                    await asyncio.sleep(SPOOL_RETRY_MAX_S)
                    reader = self.spool.reader(str(self.forwarded))
        finally:
            self._forwarder = None

    async def _xadd_until_taken(self, rec: Record) -> bool:
        """Appends one spooled record to the stream, retrying while Redis is away; False once the outbox closes."""
        import redis.exceptions as rex

        env = {"id": rec.id, "kind": rec.kind, "sid": rec.sid, "enqueued_ms": rec.enqueued_ms, "event": rec.event}
        delay = 0.2
        while True:
            try:
                await self.redis.xadd(self.stream, {"r": _encode(env)}, maxlen=self.maxlen, approximate=True)
                return True
            except (rex.RedisError, OSError) as err:
                # any failure, not only a refused connection: a Redis that is still starting, or a pooled connection
                # to one that has gone, fails in other ways, and a forwarder that died would leave the spool
                # unforwarded until the next event or restart
                if self._closing:
                    return False
                if not isinstance(err, (rex.ConnectionError, rex.TimeoutError)):
                    log.warning("events outbox: moving spooled event %s into the stream failed: %s; retrying",
                                rec.id, err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, SPOOL_RETRY_MAX_S)

    async def _sweep_orphans(self) -> None:
        while not self._closing:
            try:
                await self.adopt_orphans()
            except Exception as err:  # an unreadable root or slot now: what it holds stays on disk for the next sweep
                log.warning("events outbox: sweeping %s for orphaned spool slots failed: %s", self.spool.dir.parent, err)
            await asyncio.sleep(ORPHAN_SWEEP_S)

    async def adopt_orphans(self) -> int:
        """Moves into the stream the events of every slot beside ours that no live process holds; returns how many."""
        moved = 0
        for slot in sorted(self.spool.dir.parent.iterdir()):
            if self._closing:
                break
            if slot == self.spool.dir or not slot.name.isdigit() or not slot.is_dir():
                continue
            try:
                orphan = FileOutbox(slot)
            except OutboxBusy:
                continue  # a live process holds it and forwards it itself
            try:
                moved += await self._drain(orphan)
            finally:
                await orphan.close()
        return moved

    async def _drain(self, orphan: FileOutbox) -> int:
        cursor = _cursor_of(orphan)
        if orphan.head_seq <= cursor:
            return 0
        log.warning("events outbox: adopting %d spooled events from %s, which no live process holds",
                    orphan.head_seq - cursor, orphan.dir)
        reader, moved = orphan.reader(str(cursor)), 0
        while orphan.head_seq > cursor and not self._closing:
            records = await reader.read(100, 0)
            if not records:
                break
            for rec in records:
                if not await self._xadd_until_taken(rec):
                    break
                cursor, moved = int(rec.pos), moved + 1
            await orphan.save_state(SPOOL_CURSOR, {"pos": str(cursor)})  # per batch, as the slot's own forwarder
            await orphan.compact(str(cursor))
        return moved

    async def backlog(self, after: str | None, cap: int = 100_000) -> tuple[int, int | None]:
        count, oldest = await super().backlog(after, cap)
        return count + self.spooled, oldest

    async def close(self) -> None:
        self._closing = True
        for task in (self._forwarder, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await self.spool.close()
        await super().close()


def open_outbox(cfg_outbox: Any, redis_url: str | None, *, readonly: bool = False,
                spool_dir: str | os.PathLike | None = None) -> Outbox:
    """The file outbox, or with Redis the Redis outbox: spooled to `spool_dir` during outages when one is given (the
    gateway gives <state_dir>/events-spool; read-only tools such as `ztgate events status` need none)."""
    if redis_url and spool_dir is not None and not readonly:
        return SpooledRedisOutbox(redis_url, stream=cfg_outbox.stream, maxlen=cfg_outbox.maxlen, spool_dir=spool_dir)
    if redis_url:
        return RedisOutbox(redis_url, stream=cfg_outbox.stream, maxlen=cfg_outbox.maxlen)
    return FileOutbox(cfg_outbox.path, segment_bytes=cfg_outbox.segment_bytes, readonly=readonly)
