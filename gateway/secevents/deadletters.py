"""Dead letters: events a sink refused permanently, kept per sink until an operator retries or drops them.

A dead letter holds the whole event (so the outbox may compact past it) and what its delivery attempts met: the
receiver's status, the last error, how many attempts, when. Two stores with one interface, beside the outbox:
- FileDeadLetters (file outbox): `<outbox>/dead-letters/<sink>.jsonl`, a log of one JSON object per line, appended
  and fsync'd under a lock file (the gateway and `ztgate events` may both write): `dead` (a dead letter, whole),
  `retry` (an operator put it back), `drop` (an operator removed it), `delivered` (its redelivery succeeded). The last
  line about an event decides; the log is rewritten without the settled lines once they outnumber the live ones.
- RedisDeadLetters (Redis outbox): a hash `<stream>:dead:<sink>` (event id -> dead letter) and a sorted set
  `<stream>:dead-retry:<sink>` of the ids put back, in their original order. The gateway's writes run as scripts that
  check the sink's delivery lease, so a replica that lost the lease cannot dead-letter or settle anything.

Retrying puts a dead letter back for its own sink only: that sink's delivery worker redelivers it (between reads of
the outbox), and no other sink sees it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Protocol

from .outbox import FileOutbox, Outbox, Record, RedisOutbox

log = logging.getLogger("ztgate.secevents")

DEAD_LETTER_DIR = "dead-letters"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    sink: str
    uid: str                   # the event id (metadata.uid), as receivers de-duplicate on
    pos: str                   # where it was in the outbox
    kind: str
    sid: str | None
    enqueued_ms: int
    status: int | None         # the receiver's HTTP status, when it answered one
    reason: str                # the last error, as logged
    attempts: int              # failed delivery attempts, over every round of retries
    first_attempt_at: float
    last_attempt_at: float
    dead_lettered_at: float
    event: dict = field(repr=False)
    retry_requested: bool = False  # put back by an operator, not yet redelivered

    def record(self) -> Record:
        return Record(pos=self.pos, id=self.uid, kind=self.kind, sid=self.sid, enqueued_ms=self.enqueued_ms,
                      event=self.event)

    def stored(self) -> dict:
        """What the store keeps: the retry mark lives in the store's own structure."""
        d = asdict(self)
        del d["retry_requested"]
        return d

    def summary(self, *, with_body: bool = False) -> dict:
        """What operators are shown: everything but the event, unless they ask for it."""
        d = asdict(self)
        if not with_body:
            del d["event"]
        return d

    @staticmethod
    def from_stored(d: dict) -> "DeadLetter":
        return DeadLetter(sink=str(d["sink"]), uid=str(d["uid"]), pos=str(d["pos"]), kind=str(d.get("kind", "")),
                          sid=d.get("sid"), enqueued_ms=int(d.get("enqueued_ms", 0)), status=d.get("status"),
                          reason=str(d.get("reason", "")), attempts=int(d.get("attempts", 0)),
                          first_attempt_at=float(d["first_attempt_at"]), last_attempt_at=float(d["last_attempt_at"]),
                          dead_lettered_at=float(d["dead_lettered_at"]), event=d["event"])


def _order(letter: DeadLetter) -> tuple[int, str]:
    return letter.enqueued_ms, letter.uid


class DeadLetterStore(Protocol):
    async def add(self, letter: DeadLetter, owner: str) -> bool:
        """Stores (or replaces) a dead letter, clearing a retry mark; False when `owner` no longer holds the
        sink's delivery lease (nothing is written then)."""
    async def resolve(self, sink: str, uid: str, owner: str) -> bool:
        """Removes a redelivered dead letter; False when `owner` no longer holds the lease."""
    async def list(self, sink: str) -> list[DeadLetter]: ...
    async def count(self, sink: str) -> int: ...
    async def retries(self, sink: str, limit: int) -> list[DeadLetter]:
        """The dead letters put back for redelivery, oldest event first."""
    async def request_retry(self, sink: str, uid: str | None) -> list[str]:
        """Puts back one dead letter (or all with `uid` None); returns the ids put back."""
    async def drop(self, sink: str, uid: str | None) -> list[str]:
        """Deletes one dead letter (or all with `uid` None); returns the ids deleted."""


def dead_letters_of(outbox: Outbox) -> DeadLetterStore:
    """The dead-letter store that goes with an outbox: beside the file outbox, or under the Redis stream's key."""
    if isinstance(outbox, FileOutbox):
        return FileDeadLetters(outbox.dir / DEAD_LETTER_DIR)
    if isinstance(outbox, RedisOutbox):
        return RedisDeadLetters(outbox.redis, outbox.stream)
    raise TypeError(f"no dead-letter store for {type(outbox).__name__}")


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# ---------------------------------------------------------------------------------------------- file store


@dataclass
class _Fold:
    """A sink's dead-letter log read up to `end` (a line boundary): what is live, and how many lines it took."""
    inode: int
    end: int = 0
    lines: int = 0
    letters: dict[str, DeadLetter] = field(default_factory=dict)

    def apply(self, op: dict) -> None:
        uid = str(op["uid"])
        what = op["op"]
        if what == "dead":
            self.letters[uid] = DeadLetter.from_stored(op)
        elif what == "retry" and uid in self.letters:
            self.letters[uid] = replace(self.letters[uid], retry_requested=True)
        elif what in ("drop", "delivered"):
            self.letters.pop(uid, None)


class FileDeadLetters:
    # past this many settled lines (and more than the live ones), the log is rewritten with the live ones alone
    COMPACT_SLACK = 64

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self._folds: dict[str, _Fold] = {}
        self._folding = threading.Lock()  # appends fold in a worker thread, reads on the event loop

    def _path(self, sink: str) -> Path:
        return self.dir / f"{sink}.jsonl"

    @contextlib.contextmanager
    def _locked(self, sink: str) -> Iterator[None]:
        # a lock file, not the log itself: compaction replaces the log, and a lock on the old inode would not hold
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / f"{sink}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _load(self, sink: str) -> tuple[int, dict[str, DeadLetter]]:
        """The log as it is now: its line count and a copy of what is live. Reads only what was appended since the
        last call (the log is append-only between compactions, and a compaction gives it a new inode)."""
        with self._folding:
            fold = self._load_locked(sink)
            return fold.lines, dict(fold.letters)

    def _load_locked(self, sink: str) -> _Fold:
        path = self._path(sink)
        try:
            st = path.stat()
        except FileNotFoundError:
            self._folds.pop(sink, None)
            return _Fold(inode=0)
        fold = self._folds.get(sink)
        if fold is None or fold.inode != st.st_ino or st.st_size < fold.end:
            fold = _Fold(inode=st.st_ino)
        if st.st_size > fold.end:
            with open(path, "rb") as f:
                f.seek(fold.end)
                data = f.read()
            complete = data.rfind(b"\n") + 1  # a line still being written (or torn by a crash) waits
            for line in data[:complete].splitlines():
                self._apply_line(fold, line, path)
            fold.end += complete
        self._folds[sink] = fold
        return fold

    @staticmethod
    def _apply_line(fold: _Fold, line: bytes, path: Path) -> None:
        fold.lines += 1
        try:
            fold.apply(json.loads(line))
        except (ValueError, KeyError, TypeError):
            log.error("dead letters: a line of %s is not a dead-letter entry; it is passed over", path)

    def _append_sync(self, sink: str, ops: list[dict]) -> None:
        path = self._path(sink)
        with self._locked(sink):
            created = not path.exists()
            with open(path, "a+b") as f:
                self._cut_torn_tail(f)
                f.write(b"".join(_encode(op) + b"\n" for op in ops))
                f.flush()
                os.fsync(f.fileno())
            if created:
                _fsync_dir(self.dir)
            self._compact_if_due(sink)

    @staticmethod
    def _cut_torn_tail(f: Any) -> None:
        """A crash mid-append leaves a line without its newline; appending after it would spoil the next line too."""
        size = f.seek(0, os.SEEK_END)
        if not size:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        keep = f.read().rfind(b"\n") + 1
        f.truncate(keep)
        f.seek(0, os.SEEK_END)

    def _compact_if_due(self, sink: str) -> None:
        lines, live = self._load(sink)
        if lines <= 2 * len(live) + self.COMPACT_SLACK:
            return
        path = self._path(sink)
        tmp = path.with_suffix(".tmp")
        letters = sorted(live.values(), key=_order)
        ops = [{"op": "dead", **letter.stored()} for letter in letters]
        ops += [{"op": "retry", "uid": letter.uid, "at": time.time()} for letter in letters if letter.retry_requested]
        with open(tmp, "wb") as f:
            f.write(b"".join(_encode(op) + b"\n" for op in ops))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.dir)

    async def _append(self, sink: str, ops: list[dict]) -> None:
        await asyncio.to_thread(self._append_sync, sink, ops)

    async def _letters(self, sink: str) -> dict[str, DeadLetter]:
        # off the event loop, which the proxy shares: a first read takes in the whole log
        return (await asyncio.to_thread(self._load, sink))[1]

    # -- the gateway's side; the directory lock of the file outbox already makes this process the only deliverer
    async def add(self, letter: DeadLetter, owner: str) -> bool:
        await self._append(letter.sink, [{"op": "dead", **letter.stored()}])
        return True

    async def resolve(self, sink: str, uid: str, owner: str) -> bool:
        await self._append(sink, [{"op": "delivered", "uid": uid, "at": time.time()}])
        return True

    # -- shared
    async def list(self, sink: str) -> list[DeadLetter]:
        return sorted((await self._letters(sink)).values(), key=_order)

    async def count(self, sink: str) -> int:
        return len(await self._letters(sink))

    async def retries(self, sink: str, limit: int) -> list[DeadLetter]:
        letters = await self._letters(sink)
        if not letters:
            return []
        return sorted((x for x in letters.values() if x.retry_requested), key=_order)[:limit]

    # -- the operator's side (`ztgate events`)
    async def request_retry(self, sink: str, uid: str | None) -> list[str]:
        return await self._settle(sink, uid, "retry")

    async def drop(self, sink: str, uid: str | None) -> list[str]:
        return await self._settle(sink, uid, "drop")

    async def _settle(self, sink: str, uid: str | None, op: str) -> list[str]:
        uids = [x.uid for x in await self.list(sink) if uid is None or x.uid == uid]
        if uids:
            now = time.time()
            await self._append(sink, [{"op": op, "uid": u, "at": now} for u in uids])
        return uids


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- Redis store


class RedisDeadLetters:
    # KEYS: letters hash, retry zset, lease. ARGV: owner, uid, dead letter (JSON)
    _ADD = ("if redis.call('get', KEYS[3]) ~= ARGV[1] then return 0 end "
            "redis.call('hset', KEYS[1], ARGV[2], ARGV[3]) redis.call('zrem', KEYS[2], ARGV[2]) return 1")
    # KEYS: letters hash, retry zset, lease. ARGV: owner, uid
    _RESOLVE = ("if redis.call('get', KEYS[3]) ~= ARGV[1] then return 0 end "
                "redis.call('hdel', KEYS[1], ARGV[2]) redis.call('zrem', KEYS[2], ARGV[2]) return 1")
    # KEYS: letters hash, retry zset. ARGV: uid, score, uid, score, ... Only ids still dead-lettered are marked: one
    # the gateway redelivered meanwhile must not come back as a mark without a letter
    _RETRY = ("local done = {} for i = 1, #ARGV, 2 do "
              "if redis.call('hexists', KEYS[1], ARGV[i]) == 1 then "
              "redis.call('zadd', KEYS[2], ARGV[i + 1], ARGV[i]) done[#done + 1] = ARGV[i] end end return done")
    # KEYS: letters hash, retry zset. ARGV: uids
    _DROP = ("local done = {} for i = 1, #ARGV do "
             "if redis.call('hdel', KEYS[1], ARGV[i]) == 1 then redis.call('zrem', KEYS[2], ARGV[i]) "
             "done[#done + 1] = ARGV[i] end end return done")

    def __init__(self, redis: Any, stream: str):
        self.redis = redis
        self.stream = stream

    def _keys(self, sink: str) -> tuple[str, str, str]:
        return f"{self.stream}:dead:{sink}", f"{self.stream}:dead-retry:{sink}", f"{self.stream}:lease:{sink}"

    def _parse(self, raw: Any, retry: bool) -> DeadLetter | None:
        try:
            return replace(DeadLetter.from_stored(json.loads(raw)), retry_requested=retry)
        except (TypeError, ValueError, KeyError):
            log.error("dead letters: an entry under %s is not a dead letter; it is passed over", self.stream)
            return None

    async def add(self, letter: DeadLetter, owner: str) -> bool:
        return bool(await self.redis.eval(self._ADD, 3, *self._keys(letter.sink), owner, letter.uid,
                                          _encode(letter.stored())))

    async def resolve(self, sink: str, uid: str, owner: str) -> bool:
        return bool(await self.redis.eval(self._RESOLVE, 3, *self._keys(sink), owner, uid))

    async def list(self, sink: str) -> list[DeadLetter]:
        letters_key, retry_key, _ = self._keys(sink)
        raw = await self.redis.hgetall(letters_key)
        retrying = {_text(u) for u in await self.redis.zrange(retry_key, 0, -1)}
        letters = (self._parse(v, _text(k) in retrying) for k, v in raw.items())
        return sorted((x for x in letters if x is not None), key=_order)

    async def count(self, sink: str) -> int:
        return int(await self.redis.hlen(self._keys(sink)[0]))

    async def retries(self, sink: str, limit: int) -> list[DeadLetter]:
        letters_key, retry_key, _ = self._keys(sink)
        uids = [_text(u) for u in await self.redis.zrange(retry_key, 0, limit - 1)]
        if not uids:
            return []
        out = []
        for uid, raw in zip(uids, await self.redis.hmget(letters_key, uids)):
            letter = self._parse(raw, True) if raw is not None else None
            if letter is None:  # dropped meanwhile, or unreadable: its mark would be picked up forever
                await self.redis.zrem(retry_key, uid)
                continue
            out.append(letter)
        return out

    async def request_retry(self, sink: str, uid: str | None) -> list[str]:
        letters = [x for x in await self.list(sink) if uid is None or x.uid == uid]
        if not letters:
            return []
        args = [a for x in letters for a in (x.uid, x.enqueued_ms)]
        letters_key, retry_key, _ = self._keys(sink)
        return [_text(u) for u in await self.redis.eval(self._RETRY, 2, letters_key, retry_key, *args)]

    async def drop(self, sink: str, uid: str | None) -> list[str]:
        letters_key, retry_key, _ = self._keys(sink)
        uids = [uid] if uid is not None else [_text(u) for u in await self.redis.hkeys(letters_key)]
        if not uids:
            return []
        return [_text(u) for u in await self.redis.eval(self._DROP, 2, letters_key, retry_key, *uids)]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
