from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.secevents import EventsConfig
from gateway.secevents.config import JsonlSinkConfig, SyslogSinkConfig, WebhookSinkConfig

SECRET = "0123456789abcdef0123"


def test_defaults_and_full_example():
    assert EventsConfig.from_dict(None).outbox_path == "var/ztgate/outbox"
    cfg = EventsConfig.from_dict({
        "outbox": {"path": "/var/lib/ztgate/outbox", "stream": "ztgate:outbox", "maxlen": 1000000},
        "sinks": [
            {"type": "webhook", "url": "https://siem.example/hook", "secret": SECRET, "timeout": "5", "max_backoff": 300},
            {"type": "redis_stream", "url": "redis://127.0.0.1:6379/0", "stream": "ztgate:security-events", "maxlen": 100000},
            {"type": "jsonl", "path": "/var/log/ztgate/events.jsonl", "max_bytes": 104857600, "backups": 10},
            {"type": "otlp", "endpoint": "http://collector:4318/v1/logs"},
            {"type": "syslog", "address": "tcp://127.0.0.1:6514", "cef": True, "facility": "local3"},
        ],
        "include_shadow": False,
    })
    assert [s.type for s in cfg.sinks] == ["webhook", "redis_stream", "jsonl", "otlp", "syslog"]
    assert isinstance(cfg.sinks[0], WebhookSinkConfig) and cfg.sinks[0].timeout == 5.0
    assert "secret" not in repr(cfg.sinks[0]) or SECRET not in repr(cfg.sinks[0])
    assert isinstance(cfg.sinks[2], JsonlSinkConfig) and cfg.sinks[2].backups == 10
    s = cfg.sinks[4]
    assert isinstance(s, SyslogSinkConfig) and (s.transport, s.port, s.facility, s.cef) == ("tcp", 6514, 19, True)
    assert cfg.include_shadow is False
    # Default names are stable (they key the delivery cursors) and distinct.
    again = EventsConfig.from_dict({"sinks": [{"type": "jsonl", "path": "/var/log/ztgate/events.jsonl"}]})
    assert again.sinks[0].name == cfg.sinks[2].name


@pytest.mark.parametrize("section, path, words", [
    ({"sinks": [{"type": "jsonl", "path": "/x"}, {"type": "webhook", "url": "ftp://x", "secret": SECRET}]},
     ("sinks", 1, "url"), "http(s) URL"),
    ({"sinks": [{"type": "webhook", "url": "https://x.example"}]}, ("sinks", 0, "secret"), "required"),
    ({"sinks": [{"type": "webhook", "url": "https://x.example", "secret": "short"}]}, ("sinks", 0, "secret"), "too short"),
    ({"sinks": [{"type": "kafka"}]}, ("sinks", 0, "type"), "unknown sink type"),
    ({"sinks": [{"type": "jsonl", "path": "/x", "rotate": 3}]}, ("sinks", 0, "rotate"), "unknown key"),
    ({"sinks": [{"type": "syslog", "address": "127.0.0.1:514"}]}, ("sinks", 0, "address"), "udp://"),
    ({"sinks": [{"type": "syslog", "address": "udp://h:514", "facility": "nope"}]}, ("sinks", 0, "facility"), "facility"),
    ({"sinks": [{"type": "jsonl", "path": "/x", "name": "a"}, {"type": "jsonl", "path": "/y", "name": "a"}]},
     ("sinks", 1, "name"), "duplicate"),
    ({"sinks": [{"type": "jsonl", "path": "/x", "max_bytes": -1}]}, ("sinks", 0, "max_bytes"), "at least"),
    ({"sinks": [{"type": "redis_stream", "url": "http://r"}]}, ("sinks", 0, "url"), "redis://"),
    # an attempt longer than the 15 s delivery lease would let a second replica deliver the same event alongside
    ({"sinks": [{"type": "webhook", "url": "https://x.example", "secret": SECRET, "timeout": 30}]},
     ("sinks", 0, "timeout"), "at most"),
    ({"outbox": {"maxlen": "lots"}}, ("outbox", "maxlen"), "number"),
    ({"include_shadow": "yes"}, ("include_shadow",), "true or false"),
    ({"sinks": {"type": "jsonl"}}, ("sinks",), "list"),
])
def test_errors_name_the_key_path(section, path, words):
    with pytest.raises(ConfigError) as exc:
        EventsConfig.from_dict(section)
    assert exc.value.path == path
    assert words in exc.value.message


# NaN passes every `<` check and infinity every minimum: a NaN backoff made the delivery worker sleep forever
@pytest.mark.parametrize("section, path", [
    ({"min_backoff": float("nan")}, ("min_backoff",)),
    ({"max_backoff": float("inf")}, ("max_backoff",)),
    ({"max_backoff": "inf"}, ("max_backoff",)),      # ${ENV} expansion yields strings
    ({"min_backoff": "NaN"}, ("min_backoff",)),
    ({"min_backoff": "-inf"}, ("min_backoff",)),
    ({"sinks": [{"type": "jsonl", "path": "/x", "max_backoff": float("inf")}]}, ("sinks", 0, "max_backoff")),
    ({"sinks": [{"type": "webhook", "url": "https://x.example", "secret": SECRET, "timeout": float("nan")}]},
     ("sinks", 0, "timeout")),
])
def test_nan_and_infinity_are_refused(section, path):
    with pytest.raises(ConfigError) as exc:
        EventsConfig.from_dict(section)
    assert exc.value.path == path
    assert "finite number" in exc.value.message


def test_a_number_too_large_for_a_float_is_refused():
    with pytest.raises(ConfigError) as exc:
        EventsConfig.from_dict({"max_backoff": 10 ** 400})
    assert exc.value.path == ("max_backoff",) and "too large" in exc.value.message


def test_dead_letter_after_defaults_to_five_is_inherited_and_may_be_zero():
    cfg = EventsConfig.from_dict({"sinks": [{"type": "jsonl", "path": "/x"}]})
    assert cfg.sinks[0].dead_letter_after == 5
    cfg = EventsConfig.from_dict({"dead_letter_after": "3", "sinks": [  # ${ENV} expansion yields strings
        {"type": "jsonl", "path": "/x"}, {"type": "webhook", "url": "https://x.example", "secret": SECRET,
                                          "dead_letter_after": 0}]})
    assert [s.dead_letter_after for s in cfg.sinks] == [3, 0]  # 0: never dead-letter, retry forever


@pytest.mark.parametrize("section, path, words", [
    ({"dead_letter_after": -1}, ("dead_letter_after",), "at least 0"),
    ({"dead_letter_after": 2.5}, ("dead_letter_after",), "an integer"),
    ({"dead_letter_after": "often"}, ("dead_letter_after",), "a number"),
    ({"sinks": [{"type": "jsonl", "path": "/x", "dead_letter_after": True}]}, ("sinks", 0, "dead_letter_after"),
     "an integer"),
    ({"sinks": [{"type": "otlp", "endpoint": "http://c:4318/v1/logs", "dead_letter_after": -3}]},
     ("sinks", 0, "dead_letter_after"), "at least 0"),
])
def test_dead_letter_after_errors_name_the_key_path(section, path, words):
    with pytest.raises(ConfigError) as exc:
        EventsConfig.from_dict(section)
    assert exc.value.path == path
    assert words in exc.value.message
