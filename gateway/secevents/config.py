"""The `events:` section of ztgate's config, validated once into frozen dataclasses.

Every error is a ConfigError whose path is relative to the section, e.g. ("sinks", 1, "url").
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import ConfigError, KeyPath

SYSLOG_FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8,
    "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13, "alert": 14, "clock": 15,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}
SINK_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
MIN_SECRET_CHARS = 16
# Attempts at one event that a sink refuses permanently (e.g. HTTP 400) before it goes to the sink's dead letters:
# a few, because a refusal that does not heal at once rarely heals by itself, and every attempt holds back the
# events behind it. 0 keeps today's behaviour: retry forever, slowly.
DEFAULT_DEAD_LETTER_AFTER = 5


@dataclass(frozen=True)
class OutboxConfig:
    path: str = "var/ztgate/outbox"          # embedded default: a directory of JSONL segments
    stream: str = "ztgate:outbox"            # with Redis: the stream key
    # Redis: entries every sink has delivered are trimmed as the sinks pass them; maxlen is the hard cap past
    # which XADD drops the oldest entries even if undelivered (a warning is logged well before that)
    maxlen: int = 1_000_000
    segment_bytes: int = 8 * 1024 * 1024     # file outbox: start a new segment past this size


@dataclass(frozen=True)
class SinkConfig:
    name: str
    type: str
    min_backoff: float
    max_backoff: float
    dead_letter_after: int = DEFAULT_DEAD_LETTER_AFTER  # 0: never dead-letter


@dataclass(frozen=True)
class WebhookSinkConfig(SinkConfig):
    url: str = ""
    secret: str = field(default="", repr=False)
    timeout: float = 5.0
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RedisStreamSinkConfig(SinkConfig):
    url: str = ""
    stream: str = "ztgate:security-events"
    maxlen: int = 100_000
    timeout: float = 5.0


@dataclass(frozen=True)
class JsonlSinkConfig(SinkConfig):
    path: str = ""
    max_bytes: int = 100 * 1024 * 1024
    backups: int = 10
    fsync: bool = True


@dataclass(frozen=True)
class OtlpSinkConfig(SinkConfig):
    endpoint: str = ""
    timeout: float = 5.0
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SyslogSinkConfig(SinkConfig):
    transport: str = "udp"   # udp | tcp
    host: str = "127.0.0.1"
    port: int = 514
    cef: bool = False
    facility: int = SYSLOG_FACILITIES["authpriv"]
    app_name: str = "ztgate"
    timeout: float = 5.0


@dataclass(frozen=True)
class EventsConfig:
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    sinks: tuple[SinkConfig, ...] = ()
    include_shadow: bool = True

    @property
    def outbox_path(self) -> str:
        return self.outbox.path

    @classmethod
    def from_dict(cls, section: dict | None) -> "EventsConfig":
        if section is None:
            return cls()
        r = _Reader(section, ())
        r.allow("outbox", "sinks", "include_shadow", "min_backoff", "max_backoff", "dead_letter_after")
        include_shadow = r.boolean("include_shadow", True)
        defaults = _SinkDefaults(min_backoff=r.number("min_backoff", 0.5, minimum=0.001),
                                 max_backoff=r.number("max_backoff", 300.0, minimum=0.001),
                                 dead_letter_after=_dead_letter_after(r, DEFAULT_DEAD_LETTER_AFTER))
        outbox = _outbox(section.get("outbox"), ("outbox",))
        raw_sinks = section.get("sinks", [])
        if raw_sinks is None:
            raw_sinks = []
        if not isinstance(raw_sinks, list):
            raise ConfigError(("sinks",), f"expected a list of sinks, got {_kind(raw_sinks)}",
                              "e.g. sinks: [{type: webhook, url: https://siem.example/hook, secret: ...}]")
        sinks: list[SinkConfig] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(raw_sinks):
            sink = _sink(raw, ("sinks", i), defaults)
            if sink.name in seen:
                raise ConfigError(("sinks", i, "name"), f"duplicate sink name {sink.name!r} (also sinks[{seen[sink.name]}])",
                                  "give each sink a distinct `name:`; it keys the sink's delivery cursor")
            seen[sink.name] = i
            sinks.append(sink)
        return cls(outbox=outbox, sinks=tuple(sinks), include_shadow=include_shadow)


@dataclass(frozen=True)
class _SinkDefaults:
    """What the section sets for every sink that does not set it itself."""
    min_backoff: float
    max_backoff: float
    dead_letter_after: int


def _dead_letter_after(r: "_Reader", default: int) -> int:
    return r.number("dead_letter_after", default, minimum=0, integer=True)


def _kind(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "nothing"}.get(type(v), type(v).__name__)


class _Reader:
    def __init__(self, data: Any, path: KeyPath):
        if not isinstance(data, dict):
            raise ConfigError(path, f"expected a mapping, got {_kind(data)}")
        self.data = data
        self.path = path

    def allow(self, *keys: str) -> None:
        for key in self.data:
            if key not in keys:
                raise ConfigError(self.path + (key,), f"unknown key {key!r}", "allowed here: " + ", ".join(keys))

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str:
        if key not in self.data or self.data[key] is None:
            if required:
                raise ConfigError(self.path + (key,), "is required")
            return default  # type: ignore[return-value]
        v = self.data[key]
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(self.path + (key,), f"expected a non-empty string, got {_kind(v)}")
        return v.strip()

    def number(self, key: str, default: float, *, minimum: float | None = None, maximum: float | None = None,
               integer: bool = False, hint: str = "") -> Any:
        if key not in self.data or self.data[key] is None:
            return default
        v = self.data[key]
        if isinstance(v, str):  # ${ENV} expansion yields strings
            try:
                v = int(v) if integer else float(v)
            except ValueError:
                raise ConfigError(self.path + (key,), f"expected a number, got {self.data[key]!r}") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            raise ConfigError(self.path + (key,), f"expected {'an integer' if integer else 'a number'}, got {_kind(v)}")
        if not integer:
            v = self._finite(key, v)
        if minimum is not None and v < minimum:
            raise ConfigError(self.path + (key,), f"must be at least {minimum}, got {v}")
        if maximum is not None and v > maximum:
            raise ConfigError(self.path + (key,), f"must be at most {maximum}, got {v}", hint)
        return int(v) if integer else float(v)

    def timeout(self) -> float:
        return self.number("timeout", 5.0, minimum=0.01, maximum=MAX_TIMEOUT, hint=_TIMEOUT_HINT)

    def _finite(self, key: str, v: int | float) -> float:
        # NaN passes every `<` check and infinity every minimum; either would reach a timeout or a backoff
        # (a NaN backoff sleeps forever), so both are refused here
        try:
            f = float(v)
        except OverflowError:
            raise ConfigError(self.path + (key,), "is too large") from None
        if not math.isfinite(f):
            raise ConfigError(self.path + (key,), f"expected a finite number, got {self.data[key]!r}",
                              "NaN and infinity are not durations or sizes; give a plain number")
        return f

    def boolean(self, key: str, default: bool) -> bool:
        if key not in self.data or self.data[key] is None:
            return default
        v = self.data[key]
        if isinstance(v, str) and v.lower() in ("true", "false"):
            return v.lower() == "true"
        if not isinstance(v, bool):
            raise ConfigError(self.path + (key,), f"expected true or false, got {_kind(v)}")
        return v

    def headers(self, key: str) -> tuple[tuple[str, str], ...]:
        v = self.data.get(key)
        if v is None:
            return ()
        if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
            raise ConfigError(self.path + (key,), "expected a mapping of header names to strings",
                              "e.g. headers: {Authorization: 'Bearer ${ZTGATE_SIEM_TOKEN}'}")
        return tuple(sorted(v.items()))


# A delivery attempt must end while its lease (secevents.delivery.LEASE_TTL, 15 s) is still ours: the lease is renewed
# before each attempt, and an attempt that outlived it would let a second replica deliver the same event alongside.
MAX_TIMEOUT = 10.0
_TIMEOUT_HINT = "an attempt must end well within the 15 s delivery lease; a slow receiver is retried, not waited for"


def _outbox(raw: Any, path: KeyPath) -> OutboxConfig:
    if raw is None:
        return OutboxConfig()
    r = _Reader(raw, path)
    r.allow("path", "stream", "maxlen", "segment_bytes")
    d = OutboxConfig()
    return OutboxConfig(
        path=r.string("path", d.path),
        stream=r.string("stream", d.stream),
        maxlen=r.number("maxlen", d.maxlen, minimum=1000, integer=True),
        segment_bytes=r.number("segment_bytes", d.segment_bytes, minimum=4096, integer=True),
    )


def _http_url(r: _Reader, key: str) -> str:
    url = r.string(key, required=True)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(r.path + (key,), f"expected an http(s) URL, got {url!r}", "e.g. https://siem.example/hook")
    return url


def _default_name(kind: str, target: str) -> str:
    # Stable across restarts and reordering: the cursor file is keyed by it.
    return f"{kind}-{hashlib.sha256(target.encode()).hexdigest()[:8]}"


SINK_KEYS = {
    "webhook": ("url", "secret", "timeout", "headers"),
    "redis_stream": ("url", "stream", "maxlen", "timeout"),
    "jsonl": ("path", "max_bytes", "backups", "fsync"),
    "otlp": ("endpoint", "timeout", "headers"),
    "syslog": ("address", "cef", "facility", "app_name", "timeout"),
}


def _sink(raw: Any, path: KeyPath, defaults: _SinkDefaults) -> SinkConfig:
    r = _Reader(raw, path)
    kind = r.string("type", required=True)
    if kind not in SINK_KEYS:
        raise ConfigError(path + ("type",), f"unknown sink type {kind!r}", "one of: " + ", ".join(SINK_KEYS))
    r.allow("type", "name", "min_backoff", "max_backoff", "dead_letter_after", *SINK_KEYS[kind])
    common = dict(
        type=kind,
        min_backoff=r.number("min_backoff", defaults.min_backoff, minimum=0.001),
        max_backoff=r.number("max_backoff", defaults.max_backoff, minimum=0.001),
        dead_letter_after=_dead_letter_after(r, defaults.dead_letter_after),
    )
    if common["max_backoff"] < common["min_backoff"]:
        raise ConfigError(path + ("max_backoff",), "must not be smaller than min_backoff")
    name = r.string("name")
    if name is not None and not SINK_NAME.match(name):
        raise ConfigError(path + ("name",), f"invalid sink name {name!r}", "lower-case letters, digits, . _ - (max 63)")

    if kind == "webhook":
        url = _http_url(r, "url")
        secret = r.string("secret", required=True)
        if len(secret) < MIN_SECRET_CHARS:
            raise ConfigError(path + ("secret",), f"is too short ({len(secret)} characters, need {MIN_SECRET_CHARS}+)",
                              "generate one with: python -c 'import secrets; print(secrets.token_hex(32))'")
        return WebhookSinkConfig(name=name or _default_name(kind, url), url=url, secret=secret,
                                 timeout=r.timeout(), headers=r.headers("headers"), **common)
    if kind == "redis_stream":
        url = r.string("url", required=True)
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(path + ("url",), f"expected a redis://, rediss:// or unix:// URL, got {url!r}")
        stream = r.string("stream", "ztgate:security-events")
        return RedisStreamSinkConfig(name=name or _default_name(kind, url + stream), url=url, stream=stream,
                                     maxlen=r.number("maxlen", 100_000, minimum=1, integer=True),
                                     timeout=r.timeout(), **common)
    if kind == "jsonl":
        p = r.string("path", required=True)
        return JsonlSinkConfig(name=name or _default_name(kind, p), path=p,
                               max_bytes=r.number("max_bytes", 100 * 1024 * 1024, minimum=1024, integer=True),
                               backups=r.number("backups", 10, minimum=0, integer=True),
                               fsync=r.boolean("fsync", True), **common)
    if kind == "otlp":
        endpoint = _http_url(r, "endpoint")
        return OtlpSinkConfig(name=name or _default_name(kind, endpoint), endpoint=endpoint,
                              timeout=r.timeout(), headers=r.headers("headers"), **common)
    # syslog
    address = r.string("address", required=True)
    parts = urlsplit(address)
    if parts.scheme not in ("udp", "tcp") or not parts.hostname:
        raise ConfigError(path + ("address",), f"expected udp://host:port or tcp://host:port, got {address!r}",
                          "e.g. udp://127.0.0.1:514")
    try:
        port = parts.port or 514
    except ValueError:
        raise ConfigError(path + ("address",), f"invalid port in {address!r}") from None
    facility_raw = raw.get("facility", "authpriv")
    if isinstance(facility_raw, str) and facility_raw in SYSLOG_FACILITIES:
        facility = SYSLOG_FACILITIES[facility_raw]
    elif isinstance(facility_raw, int) and not isinstance(facility_raw, bool) and 0 <= facility_raw <= 23:
        facility = facility_raw
    else:
        raise ConfigError(path + ("facility",), f"unknown syslog facility {facility_raw!r}",
                          "a name (authpriv, local0 ... local7, audit, ...) or a number 0-23")
    return SyslogSinkConfig(name=name or _default_name(kind, address), transport=parts.scheme, host=parts.hostname,
                            port=port, cef=r.boolean("cef", False), facility=facility,
                            app_name=r.string("app_name", "ztgate"), timeout=r.timeout(),
                            **common)
