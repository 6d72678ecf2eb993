"""Is the browser sensor telling the truth, and is it there at all? Per-session bookkeeping -> the `sensor` Signal.

The gateway reports what it sees (pages served, sensor batches and pongs, form/API submissions that carry typed
text, requests, refused tokens); `signal()` turns it into a Signal. Checks:

  typed_without_keys  a submission carried typed text (the gateway counts non-empty text fields, never reads
                      them) but the sensor of that page reported no keystroke; decided after a short grace
                      period because the last keys may reach us after the submission itself
  silent              pages were served, requests continue, yet no batch or pong for `silent_after_s`
                      (the gateway must ping open sensors more often than that: an idle page sends nothing)
  seq_replays         a batch sequence number seen before on the same page instance (the sensor never resends)
  seq_gaps            sequence numbers that never arrived
  key_rate            more than `max_keys_per_s` key presses per second sustained over `key_rate_window_s`
  pointer_rate        pointer events faster than the sensor ever sends them (it caps moves at ~66/s)
  token_*             tokens refused: another session's (strong), forged/malformed (strong), expired (weak)
  inputs_refused      batches whose inputs the scorer refused as older than input it already had: one input
                      stamped far in the future once made it refuse every later key of the session, so the
                      detectors saw nothing while the keys above still counted as reported (a sensor's own
                      batches only race each other by milliseconds, around a page change)

The weights are judgement, not calibration: there is no labelled data on tampered sensors. Each check's
contribution is 1 - (1 - w)^count, combined as a noisy-OR. All times `t` are gateway Unix seconds; event times are
the batch's `t_src` (ms). Memory is bounded by the caps in IntegrityConfig.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from scoring.events import POINTER_KINDS, Kind
from scoring.signals import Evidence, Signal

SIGNAL_NAME = "sensor"
TOKEN_REASONS = ("malformed", "forged", "other_session", "expired", "not_yet_valid")


@dataclass(frozen=True, slots=True)
class IntegrityConfig:
    silent_after_s: float = 30.0
    submission_grace_s: float = 2.0
    # a submission without a page id is compared with keys the session sent within this window before it
    unpaged_key_window_s: float = 300.0
    max_keys_per_s: float = 30.0
    key_rate_window_s: float = 3.0
    max_pointer_per_s: float = 250.0
    pointer_rate_window_s: float = 2.0
    max_pages: int = 64
    max_pending_submissions: int = 32
    seq_window: int = 64
    # per-occurrence weights w of each check (see module docstring)
    w_typed_without_keys: float = 0.35
    w_silent: float = 0.5
    w_seq_replay: float = 0.7
    w_seq_gap: float = 0.05
    w_key_rate: float = 0.9
    w_pointer_rate: float = 0.8
    w_token_other_session: float = 0.9
    w_token_forged: float = 0.7
    w_token_expired: float = 0.1
    w_inputs_refused: float = 0.25

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name.startswith("w_"):
                if not 0.0 <= value < 1.0:
                    raise ValueError(f"IntegrityConfig.{name} must be in [0, 1)")
            elif not value > 0:
                raise ValueError(f"IntegrityConfig.{name} must be > 0")
        if self.seq_window > 1024:
            raise ValueError("IntegrityConfig.seq_window must be <= 1024")


MAX_GAP = 1_000_000  # missing batches counted for one jump: far more than any real outage, small enough to add up


class _SeqWindow:
    """Anti-replay window (as in IPsec): the highest sequence number and a bitmap of the ones just below it."""

    __slots__ = ("highest", "mask", "size")

    def __init__(self, size: int) -> None:
        self.highest = 0
        self.mask = 0
        self.size = size

    def observe(self, seq: int) -> tuple[str, int]:
        """("new", newly missing count) | ("late", -1 filled gap) | ("replay", 0)."""
        if seq > self.highest:
            shift = seq - self.highest
            # a forged jump (s up to 2**53) must not build a shift-sized integer: that took seconds and gigabytes
            self.mask = 1 if shift >= self.size else ((self.mask << shift) | 1) & ((1 << self.size) - 1)
            self.highest = seq
            return "new", min(shift - 1, MAX_GAP)
        offset = self.highest - seq
        if offset >= self.size or (self.mask >> offset) & 1:
            return "replay", 0
        self.mask |= 1 << offset
        return "late", -1


@dataclass(slots=True)
class _Page:
    served: float
    keys: int = 0
    heard: bool = False


class _RateCheck:
    """Sustained event rate on the source clock: more than `limit` events within any `window_ms`."""

    __slots__ = ("limit", "window_ms", "tail", "episodes", "last_violation_ms", "peak_per_s")

    def __init__(self, per_s: float, window_s: float) -> None:
        self.window_ms = window_s * 1000.0
        self.limit = per_s * window_s
        self.tail = np.empty(0, dtype=np.float64)
        self.episodes = 0
        self.last_violation_ms = -np.inf
        self.peak_per_s = 0.0

    def add(self, times_ms: np.ndarray) -> None:
        if not len(times_ms):
            return
        times = np.sort(np.concatenate([self.tail, times_ms]))
        start = np.searchsorted(times, times - self.window_ms, side="right")
        counts = np.arange(len(times)) - start + 1
        self.peak_per_s = max(self.peak_per_s, float(counts.max()) * 1000.0 / self.window_ms)
        over = np.flatnonzero(counts > self.limit)
        for i in over:
            window_start = times[start[i]]
            if window_start > self.last_violation_ms:  # a new burst, not the same one seen again
                self.episodes += 1
            self.last_violation_ms = times[i]
        latest = times[-1]
        keep = times[times > latest - self.window_ms]
        self.tail = keep[-int(self.limit * 2 + 16) :]  # bounded even for a flood of equal times


class SensorIntegrity:
    """Sensor-integrity bookkeeping for one session. Not thread-safe; one instance per session."""

    def __init__(self, config: IntegrityConfig | None = None) -> None:
        self.config = config or IntegrityConfig()
        c = self.config
        self._pages: OrderedDict[str, _Page] = OrderedDict()
        self._streams: OrderedDict[tuple[str, float | None], _SeqWindow] = OrderedDict()
        self._pending: deque[tuple[str | None, int, float]] = deque(maxlen=c.max_pending_submissions)
        self._key_rate = _RateCheck(c.max_keys_per_s, c.key_rate_window_s)
        self._pointer_rate = _RateCheck(c.max_pointer_per_s, c.pointer_rate_window_s)
        self._first_page_t: float | None = None
        self._last_contact: float | None = None
        self._last_key_t: float | None = None
        self._silence_start: float | None = None
        self._last_request: float | None = None
        self._first_t: float | None = None
        self._last_t: float | None = None
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "pages_served",
                "pages_heard",
                "batches",
                "pongs",
                "keys",
                "events",
                "dropped_by_sensor",
                "untrusted_input",
                "submissions",
                "typed_without_keys",
                "silent_episodes",
                "seq_gaps",
                "seq_replays",
                "seq_late",
                "requests",
                "inputs_refused",
            ),
            0,
        )
        self.counts.update({f"token_{r}": 0 for r in TOKEN_REASONS})
        self._silent_seconds = 0.0
        self._streams_heard_elsewhere = False  # see rebase(taken_over=True)

    # -- observations ----------------------------------------------------------------------------------------

    def page_served(self, page_id: str, t: float) -> None:
        self._tick(t)
        self.counts["pages_served"] += 1
        self._pages[page_id] = _Page(served=t)
        self._pages.move_to_end(page_id)
        while len(self._pages) > self.config.max_pages:
            self._pages.popitem(last=False)
        if self._first_page_t is None:
            self._first_page_t = t

    def batch(
        self,
        page_id: str,
        seq: int,
        events: np.ndarray,
        t: float,
        *,
        time_origin: float | None = None,
        dropped: int = 0,
        untrusted: int = 0,
    ) -> None:
        """A decoded sensor batch (gateway.sensor.protocol.Decoded: events, seq, time_origin, dropped, untrusted)."""
        self._tick(t)
        self._contact(page_id, t)
        self.counts["batches"] += 1
        self.counts["events"] += len(events)
        self.counts["dropped_by_sensor"] += dropped
        self.counts["untrusted_input"] += untrusted

        # one page id may run as several documents (a reload from cache reuses the token): their sequence
        # numbers restart, and so does the browser's timeOrigin
        stream_key = (page_id, time_origin)
        window = self._streams.get(stream_key)
        if window is None:
            window = self._streams[stream_key] = _SeqWindow(self.config.seq_window)
            if self._streams_heard_elsewhere:  # its earlier batches went to a process that scored the session before
                window.highest = seq - 1
            while len(self._streams) > self.config.max_pages * 2:
                self._streams.popitem(last=False)
        self._streams.move_to_end(stream_key)
        verdict, missing = window.observe(seq)
        if verdict == "replay":
            self.counts["seq_replays"] += 1
            return  # a replayed batch's content is not evidence of anything else
        if verdict == "late":
            self.counts["seq_late"] += 1
        self.counts["seq_gaps"] = max(0, self.counts["seq_gaps"] + missing)

        kinds = events["kind"]
        key_down_times = events["t_src"][kinds == Kind.KEY_DOWN]
        n_keys = len(key_down_times)
        if n_keys:
            self.counts["keys"] += n_keys
            self._last_key_t = t
            page = self._pages.get(page_id)
            if page is not None:
                page.keys += n_keys
        self._key_rate.add(key_down_times)
        self._pointer_rate.add(events["t_src"][np.isin(kinds, POINTER_KINDS)])
        self._settle(t)

    def inputs_refused(self, count: int, t: float) -> None:
        """The scorer refused `count` of a batch's sensor inputs (stamped before input it already had)."""
        if count > 0:
            self._tick(t)
            self.counts["inputs_refused"] += 1

    def pong(self, page_id: str, t: float) -> None:
        self._tick(t)
        self._contact(page_id, t)
        self.counts["pongs"] += 1

    def submission(self, page_id: str | None, typed_fields: int, t: float) -> None:
        """A form post / API call carrying `typed_fields` non-empty text values (counted, never read)."""
        self._tick(t)
        self.counts["submissions"] += 1
        if typed_fields > 0:
            self._pending.append((page_id, typed_fields, t))
        self._settle(t)

    def request(self, t: float) -> None:
        self._tick(t)
        self.counts["requests"] += 1
        self._last_request = t
        self._settle(t)

    def token_rejected(self, reason: str, t: float | None = None) -> None:
        """`reason`: gateway.sensor.tokens.SensorTokenError.reason."""
        if t is not None:
            self._tick(t)
        key = f"token_{reason}" if reason in TOKEN_REASONS else "token_malformed"
        self.counts[key] += 1

    def rebase(self, t: float, *, taken_over: bool = False) -> None:
        """Judges afresh from `t` on. The findings so far are dropped, submissions still in their grace period too,
        and the sensor counts as heard at `t`; what guards against replays (each page's sequence window) and what
        later checks compare with (pages served, their keys) stay.

        After a passed step-up: the person who passed it answers for the findings that caused it (as the scorer's
        reset_evidence). After this process took over a session another process scored (gateway/ownership.py,
        `taken_over`): what the sensor said to that one is unknown here, so nothing may be judged for lack of it:
        the sensor counts as having reported keys at `t` (no "typed without keys"), and a page's batch stream first
        heard from here on starts at the first number heard (no "gaps" for the batches the old owner had)."""
        self._tick(t)
        for name in ("typed_without_keys", "silent_episodes", "seq_gaps", "seq_replays", "inputs_refused",
                     *(f"token_{r}" for r in TOKEN_REASONS)):
            self.counts[name] = 0
        self._key_rate.episodes = self._pointer_rate.episodes = 0
        self._pending.clear()
        self._silence_start, self._silent_seconds = None, 0.0
        self._last_contact = t if self._last_contact is None else max(self._last_contact, t)
        if taken_over:
            self._last_key_t = t if self._last_key_t is None else max(self._last_key_t, t)
            self._streams_heard_elsewhere = True

    # -- verdict ---------------------------------------------------------------------------------------------

    def signal(self, now: float | None = None) -> Signal:
        if now is not None:
            self._settle(now)
        c, n = self.config, self.counts
        silent_seconds = self._silent_seconds
        if self._silence_start is not None and self._last_request is not None:
            silent_seconds += max(0.0, self._last_request - self._silence_start)
        checks = [
            ("typed_without_keys", n["typed_without_keys"], c.w_typed_without_keys,
             "typed text submitted while the sensor reported no keystrokes"),
            ("silent", n["silent_episodes"], c.w_silent,
             f"sensor silent while requests continued ({silent_seconds:.0f} s in all)"),
            ("seq_replays", n["seq_replays"], c.w_seq_replay, "sensor batches replayed"),
            ("seq_gaps", n["seq_gaps"], c.w_seq_gap, "sensor batches missing"),
            ("key_rate", self._key_rate.episodes, c.w_key_rate,
             f"key presses faster than {c.max_keys_per_s:g}/s sustained"),
            ("pointer_rate", self._pointer_rate.episodes, c.w_pointer_rate,
             f"pointer events faster than {c.max_pointer_per_s:g}/s sustained"),
            ("token_other_session", n["token_other_session"], c.w_token_other_session,
             "sensor token of another session presented"),
            ("token_forged", n["token_forged"] + n["token_malformed"], c.w_token_forged,
             "forged or malformed sensor token presented"),
            ("token_expired", n["token_expired"] + n["token_not_yet_valid"], c.w_token_expired,
             "expired sensor token presented"),
            ("inputs_refused", n["inputs_refused"], c.w_inputs_refused,
             "sensor input stamped before input already scored (a clock jumped, or was set to blind the scorer)"),
        ]
        clean = 1.0
        parts = []
        details: dict[str, float] = {}
        for name, count, weight, text in checks:
            share = 1.0 - (1.0 - weight) ** count if count else 0.0
            details[f"{name}_score"] = share
            if count:
                clean *= 1.0 - share
                parts.append(f"{text}: {count}x")
        score = min(1.0 - clean, 0.99)
        details.update({k: float(v) for k, v in n.items()})
        details["key_rate_episodes"] = float(self._key_rate.episodes)
        details["pointer_rate_episodes"] = float(self._pointer_rate.episodes)
        details["peak_keys_per_s"] = self._key_rate.peak_per_s
        details["peak_pointer_per_s"] = self._pointer_rate.peak_per_s
        details["silent_seconds"] = silent_seconds
        evidence = Evidence(
            keystrokes=n["keys"],
            seconds=(self._last_t - self._first_t) if self._first_t is not None else 0.0,
            samples=n["batches"] + n["pongs"],
        )
        sufficient = bool(parts) or n["pages_served"] > 0 or n["batches"] > 0
        if not sufficient:
            return Signal(SIGNAL_NAME, 0.0, False, evidence, "no page with the sensor served yet", details)
        if parts:
            explanation = "; ".join(parts)
        else:
            explanation = (
                f"sensor reporting normally ({n['pages_heard']}/{n['pages_served']} pages heard, "
                f"{n['batches']} batches, {n['keys']} keys)"
            )
        return Signal(SIGNAL_NAME, float(score), True, evidence, explanation, details)

    # -- internals -------------------------------------------------------------------------------------------

    def _tick(self, t: float) -> None:
        if self._first_t is None:
            self._first_t = t
        self._last_t = t if self._last_t is None else max(self._last_t, t)

    def _contact(self, page_id: str, t: float) -> None:
        page = self._pages.get(page_id)
        if page is not None and not page.heard:
            page.heard = True
            self.counts["pages_heard"] += 1
        if self._silence_start is not None:
            self._silent_seconds += max(0.0, t - self._silence_start)
            self._silence_start = None
        self._last_contact = t if self._last_contact is None else max(self._last_contact, t)

    def _settle(self, now: float) -> None:
        c = self.config
        # silence: measured from the last contact, or from the first page if the sensor never spoke
        since = self._last_contact if self._last_contact is not None else self._first_page_t
        if (
            since is not None
            and self._silence_start is None
            and self._last_request is not None
            and self._last_request - since > c.silent_after_s
        ):
            self._silence_start = since + c.silent_after_s
            self.counts["silent_episodes"] += 1
        # submissions whose grace period is over
        while self._pending and now - self._pending[0][2] >= c.submission_grace_s:
            page_id, _, t_sub = self._pending.popleft()
            page = self._pages.get(page_id) if page_id is not None else None
            if page is not None:
                typed_blind = page.keys == 0
            else:
                last = self._last_key_t
                typed_blind = last is None or last < t_sub - c.unpaged_key_window_s
            if typed_blind:
                self.counts["typed_without_keys"] += 1


__all__ = ["IntegrityConfig", "SensorIntegrity", "SIGNAL_NAME", "TOKEN_REASONS"]
