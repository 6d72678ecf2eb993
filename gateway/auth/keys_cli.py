"""`ztgate keys init|list|rotate|prune DIR`: a signing-key directory managed outside the gateway.

A gateway that can write its key directory creates, rotates and prunes keys itself. Where the directory is
mounted read-only (a Kubernetes Secret shared by every replica), these commands do the same on a local copy that
is then put in the Secret: `init` makes a complete directory (a first key and the shared secret the gateway's
HMACs are derived from), `rotate` adds a key published ahead of signing, `prune` removes keys retired for longer
than any token they signed can live.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from .keys import DEFAULT_PUBLISH_AHEAD, SUPPORTED_ALGORITHMS, KeyRing, KeyRingError

# the gateway keeps a retired key published for a whole session lifetime (runtime.py): the default max_lifetime
DEFAULT_RETENTION = 12 * 3600


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ztgate keys", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, helptext in (("init", "create a key directory: a first signing key and shared.secret"),
                           ("list", "the keys: kid, algorithm, when each signs, published or retired"),
                           ("rotate", "add a key: published now, signing after --publish-ahead seconds"),
                           ("prune", "remove keys retired longer ago than --retention seconds")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("directory")
        s.add_argument("--json", action="store_true", help="machine-readable output")
        if name in ("init", "rotate"):
            s.add_argument("--algorithm", default="ES256", choices=SUPPORTED_ALGORITHMS)
        if name == "rotate":
            s.add_argument("--publish-ahead", type=float, default=DEFAULT_PUBLISH_AHEAD,
                           help="seconds the new key is published before it signs (0 after a key compromise)")
        if name in ("prune", "list"):
            s.add_argument("--retention", type=float, default=DEFAULT_RETENTION,
                           help="session.max_lifetime of the gateways using the keys (seconds)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    directory = Path(args.directory)
    if args.action != "init" and not directory.is_dir():
        print(f"ztgate keys {args.action}: {directory} is not a directory (create one with `ztgate keys init`)",
              file=sys.stderr)
        return 2
    try:
        ring = KeyRing.load_or_create(directory, getattr(args, "algorithm", "ES256"),
                                      max_token_lifetime=getattr(args, "retention", DEFAULT_RETENTION))
        if args.action == "init":
            ring.shared_secret("init")  # creates shared.secret beside the keys
        elif args.action == "rotate":
            ring.rotate(publish_ahead=max(0.0, args.publish_ahead))
        elif args.action == "prune":
            removed = ring.prune()
            if not args.json:
                print(f"removed {len(removed)} retired key(s)" + (f": {', '.join(removed)}" if removed else ""))
    except KeyRingError as exc:
        print(f"ztgate keys {args.action}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. rotating inside the read-only mount instead of a copy
        print(f"ztgate keys {args.action}: {directory}: {exc.strerror}", file=sys.stderr)
        return 2
    rows = _rows(ring)
    if args.json:
        print(json.dumps({"directory": str(directory), "keys": rows}, indent=2))
    elif args.action != "prune":
        for row in rows:
            print(f"{row['kid']}  {row['algorithm']:6}  signs from {row['signs_from']}  {row['state']}")
    return 0


def _rows(ring: KeyRing) -> list[dict]:
    now = ring._clock()
    signing = ring.signing_key(now)
    rows = []
    for key in ring.keys:
        retired = ring.retired_at(key)
        if key is signing:
            state = "signing"
        elif key.created > now:
            state = "published, not signing yet"
        else:
            state = f"retired {_when(retired)}" if retired is not None else "published"
        rows.append({"kid": key.kid, "algorithm": key.algorithm, "signs_from": _when(key.created), "state": state})
    return rows


def _when(t: float | None) -> str:
    return "-" if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
