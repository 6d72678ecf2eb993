"""`ztgate events tail|verify|status|dead-letters|retry-dead-letters|drop-dead-letters`: for security staff. Reads
the outbox, the sinks' persisted state and their dead letters directly, so it works whether or not the gateway is
running. Dead letters put back are redelivered by the gateway, to their own sink only."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime, timezone

from ..text import printable
from .config import EventsConfig
from .deadletters import DeadLetter, DeadLetterStore, dead_letters_of
from .outbox import FileOutbox, Outbox, Record, open_outbox
from .signing import verify


def _summary(rec: Record) -> str:
    ev = rec.event
    ts = datetime.fromtimestamp(ev.get("time", rec.enqueued_ms) / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    z = (ev.get("unmapped") or {}).get("ztgate") or {}
    if ev.get("class_uid") == 3002:
        user = (ev.get("user") or {}).get("name", "?")
        return f"{ts}  LOGOFF     {user:<28} sid={z.get('sid', '?')}  reason={z.get('reason', '')}"
    if ev.get("class_uid") == 3001:
        user = (ev.get("user") or {}).get("name", "?")
        outcome = "KEY ADDED" if ev.get("status_id") == 1 else "KEY REFUSED"
        return f"{ts}  {outcome:<10} {user:<28} sid={z.get('sid', '?')}  {ev.get('message', '')}"
    dec = z.get("decision") or {}
    user = (z.get("user") or {}).get("email") or (z.get("user") or {}).get("sub") or "-"
    what = dec.get("action") or "policy_rejected"
    mode = "shadow" if dec.get("shadow") else "enforced"
    risk = ev.get("risk_score", "-")
    sid = (z.get("session") or {}).get("sid", "-")
    rule = f"{dec.get('policy_file', '')}#{dec.get('rule_id', '')}" if dec else z.get("directory", "")
    return f"{ts}  {what.upper():<10} {user:<28} sid={sid}  {mode}  risk={risk}  rule={rule}  {ev.get('message', '')}"


def _print(rec: Record, as_json: bool) -> None:
    # an event's names come from IdPs and browsers: escape sequences in them are shown, not run by the terminal
    print(json.dumps(rec.event, separators=(",", ":")) if as_json else printable(_summary(rec)), flush=True)


async def _tail(outbox: Outbox, n: int, follow: bool, as_json: bool) -> int:
    if isinstance(outbox, FileOutbox):
        outbox.refresh()
    recs = await outbox.tail(n)
    for rec in recs:
        _print(rec, as_json)
    if not follow:
        return 0
    reader = outbox.reader(recs[-1].pos if recs else await outbox.head())
    try:
        while True:
            for rec in await reader.read(100, timeout=1.0):
                _print(rec, as_json)
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0


async def _status(cfg: EventsConfig, outbox: Outbox, as_json: bool) -> int:
    now = time.time()
    if isinstance(outbox, FileOutbox):
        outbox.refresh()
    out = {"outbox": {"kind": outbox.kind, "head": await outbox.head()}, "sinks": []}
    dead_letters = dead_letters_of(outbox)
    for s in cfg.sinks:
        state = await outbox.load_state(s.name) or {}
        backlog, oldest = await outbox.backlog(state.get("pos"), cap=100_000)
        out["sinks"].append({
            "name": s.name, "type": s.type, "cursor": state.get("pos"), "backlog": backlog,
            "lag_seconds": round(now - oldest / 1000, 3) if backlog and oldest else 0.0,
            "delivered": state.get("delivered", 0), "failures": state.get("failures", 0),
            "last_error": state.get("last_error"), "last_delivered_at": state.get("last_delivered_at"),
            "dead_letters": await dead_letters.count(s.name),
        })
    if as_json:
        print(json.dumps(out, indent=2))
    else:
        print(f"outbox: {out['outbox']['kind']}  head={out['outbox']['head']}")
        for s in out["sinks"]:
            err = f"  last error: {s['last_error']}" if s["last_error"] and s["backlog"] else ""
            print(f"  {s['name']:<28} {s['type']:<13} backlog={s['backlog']:<7} lag={s['lag_seconds']:.1f}s "
                  f"delivered={s['delivered']} failures={s['failures']} dead_letters={s['dead_letters']}{err}")
        for s in out["sinks"]:
            if s["dead_letters"]:
                print(f"{s['dead_letters']} dead letter(s) for sink {s['name']}: "
                      f"ztgate events dead-letters --sink {s['name']}")
    return 0


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dead_letter_line(letter: DeadLetter) -> str:
    status = letter.status if letter.status is not None else "-"
    mark = "  RETRY REQUESTED" if letter.retry_requested else ""
    return (f"{letter.sink:<20} {letter.uid}  status={status}  attempts={letter.attempts}  "
            f"first={_when(letter.first_attempt_at)}  last={_when(letter.last_attempt_at)}{mark}  {letter.reason}")


class UnknownSink(ValueError):
    pass


def _sink_names(cfg: EventsConfig, sink: str | None) -> list[str]:
    """The configured sinks an operator's --sink picks (all without it): a retry for a sink the gateway no longer
    has would never be delivered."""
    names = [s.name for s in cfg.sinks]
    if sink is None:
        return names
    if sink not in names:
        raise UnknownSink(f"no sink named {sink!r} in the events config (configured: {', '.join(names) or 'none'})")
    return [sink]


async def _list_dead_letters(cfg: EventsConfig, store: DeadLetterStore, args: argparse.Namespace) -> int:
    letters = [x for name in _sink_names(cfg, args.sink) for x in await store.list(name)]
    if args.json:
        print(json.dumps([x.summary(with_body=args.show_body) for x in letters], indent=2))
        return 0
    if not letters:
        print("no dead letters")
    for letter in letters:
        # the reason quotes the receiver (e.g. a redirect target): shown, never run by the terminal
        print(printable(_dead_letter_line(letter)))
        if args.show_body:
            print("    " + json.dumps(letter.event, separators=(",", ":"), sort_keys=True))
    return 0


async def _retry_dead_letters(cfg: EventsConfig, store: DeadLetterStore, args: argparse.Namespace) -> int:
    found = 0
    for name in _sink_names(cfg, args.sink):
        uids = await store.request_retry(name, args.uid)
        found += len(uids)
        if uids:
            print(f"sink {name}: {len(uids)} dead letter(s) put back; the gateway delivers them to this sink only:")
            print("\n".join(f"  {u}" for u in uids))
    return _none_found(found, args.uid)


async def _drop_dead_letters(cfg: EventsConfig, store: DeadLetterStore, args: argparse.Namespace) -> int:
    [name] = _sink_names(cfg, args.sink)
    uids = await store.drop(name, None if args.all else args.uid)
    if uids:
        print(f"sink {name}: {len(uids)} dead letter(s) deleted; they will not be delivered to this sink:")
        print("\n".join(f"  {u}" for u in uids))
    return _none_found(len(uids), args.uid)


def _none_found(found: int, uid: str | None) -> int:
    if found:
        return 0
    if uid is not None:
        print(f"no dead letter with id {uid!r}", file=sys.stderr)
        return 1
    print("no dead letters")
    return 0


def parse_delivery(raw: bytes) -> tuple[dict[str, str], bytes]:
    """A webhook delivery as JSON {headers, body} or as a raw HTTP request (request line, headers, body)."""
    stripped = raw.lstrip()
    if stripped.startswith(b"{"):
        doc = json.loads(stripped)
        body = doc["body"]
        body_bytes = body.encode() if isinstance(body, str) else json.dumps(body, separators=(",", ":")).encode()
        return {str(k): str(v) for k, v in doc["headers"].items()}, body_bytes
    sep = b"\r\n\r\n" if b"\r\n\r\n" in raw else b"\n\n"
    head, _, body = raw.partition(sep)
    headers: dict[str, str] = {}
    for line in head.replace(b"\r\n", b"\n").split(b"\n")[1:]:
        if b":" in line:
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip()] = v.strip()
    return headers, body


def _verify(args: argparse.Namespace) -> int:
    raw = open(args.file, "rb").read() if args.file else sys.stdin.buffer.read()
    try:
        headers, body = parse_delivery(raw)
    except (ValueError, KeyError) as err:
        print(f"cannot parse the delivery: {err}", file=sys.stderr)
        return 2
    v = verify(args.secret, headers, body, max_age=args.max_age)
    age = f", signed {v.age_seconds:.0f} s ago" if v.age_seconds is not None else ""
    print(f"{'VALID' if v.valid else 'INVALID'}: {v.reason} (delivery {v.delivery_id or '?'}{age})")
    return 0 if v.valid else 1


def main(argv: list[str], cfg: EventsConfig, redis_url: str | None) -> int:
    p = argparse.ArgumentParser(prog="ztgate events",
                                description="security events: tail, verify, status, dead letters")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tail", help="show the latest security events")
    t.add_argument("-n", type=int, default=20, help="how many past events (default 20)")
    t.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    t.add_argument("--json", action="store_true", help="print the OCSF JSON, one event per line")
    v = sub.add_parser("verify", help="check a webhook delivery's signature")
    v.add_argument("--secret", required=True)
    v.add_argument("--file", help="a JSON file {headers, body} or a raw HTTP request; default: stdin")
    v.add_argument("--max-age", type=float, default=None,
                   help="also reject deliveries signed more than this many seconds ago (replay check)")
    s = sub.add_parser("status", help="backlog, delivery lag and dead letters per sink")
    s.add_argument("--json", action="store_true")
    _dead_letter_parsers(sub)
    args = p.parse_args(argv)
    if args.cmd == "verify":
        return _verify(args)

    async def run() -> int:
        outbox = open_outbox(cfg.outbox, redis_url, readonly=True)
        try:
            if args.cmd == "tail":
                return await _tail(outbox, args.n, args.follow, args.json)
            if args.cmd in DEAD_LETTER_COMMANDS:
                return await DEAD_LETTER_COMMANDS[args.cmd](cfg, dead_letters_of(outbox), args)
            return await _status(cfg, outbox, args.json)
        finally:
            await outbox.close()

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 0
    except UnknownSink as err:
        print(err, file=sys.stderr)
        return 2


DEAD_LETTER_COMMANDS = {"dead-letters": _list_dead_letters, "retry-dead-letters": _retry_dead_letters,
                        "drop-dead-letters": _drop_dead_letters}


def _dead_letter_parsers(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("dead-letters", help="events a sink refused permanently (no event bodies unless asked)")
    d.add_argument("--sink", help="only this sink's")
    d.add_argument("--json", action="store_true")
    d.add_argument("--show-body", action="store_true", help="also print each event")
    r = sub.add_parser("retry-dead-letters",
                       help="put dead letters back for delivery to their sink only (after fixing the receiver)")
    r.add_argument("--sink", help="only this sink's (default: every sink's)")
    r.add_argument("--uid", help="only the event with this id")
    x = sub.add_parser("drop-dead-letters", help="delete dead letters for good: they are never delivered to the sink")
    x.add_argument("--sink", required=True)
    which = x.add_mutually_exclusive_group(required=True)
    which.add_argument("--uid", help="the event with this id")
    which.add_argument("--all", action="store_true", help="every dead letter of the sink")
