"""`ztgate webauthn mds-import BLOB --root ROOT.pem --out FILE`: the FIDO Metadata Service BLOB, verified, to the file
`webauthn.attestation_mds` names (gateway.auth.mds says what is kept and why)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

from .mds import LEVELS, Imported, MdsError, import_blob, read_imported


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ztgate webauthn mds-import",
                                description="Import the FIDO Metadata Service BLOB (https://mds3.fidoalliance.org/)")
    p.add_argument("blob", help="the downloaded BLOB (a JWT)")
    p.add_argument("--root", required=True, help="the FIDO Alliance MDS trust root (PEM), downloaded beside the BLOB")
    p.add_argument("--out", required=True, help="the file webauthn.attestation_mds names (replaced atomically)")
    p.add_argument("--min-level", default="FIDO_CERTIFIED", choices=LEVELS, help="lowest certification kept")
    p.add_argument("--include-platform", action="store_true",
                   help="also keep platform authenticators (unlocked with a PIN that a remote operator can type)")
    p.add_argument("--allow-stale", action="store_true", help="import a BLOB past its nextUpdate date")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    try:
        blob, root = Path(args.blob).read_bytes(), Path(args.root).read_bytes()
    except OSError as exc:
        print(f"ztgate webauthn mds-import: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    previous: Imported | None = None
    if out.exists():
        try:
            previous = read_imported(out.read_bytes())
        except MdsError as exc:
            print(f"ztgate webauthn mds-import: {out} is not an earlier import ({exc}); move it away first",
                  file=sys.stderr)
            return 2
    try:
        imported = import_blob(blob, root, today=dt.datetime.now(dt.timezone.utc).date(), previous=previous,
                               min_level=args.min_level, include_platform=args.include_platform,
                               allow_stale=args.allow_stale)
    except MdsError as exc:
        print(f"ztgate webauthn mds-import: refused: {exc}", file=sys.stderr)
        return 1
    partial = out.with_name(f".{out.name}.{os.getpid()}")
    try:
        partial.write_text(json.dumps(imported.to_json(), indent=1) + "\n")
        os.replace(partial, out)  # a gateway reloading never reads half a file
    except OSError as exc:
        partial.unlink(missing_ok=True)
        print(f"ztgate webauthn mds-import: cannot write {out}: {exc.strerror}", file=sys.stderr)
        return 2
    summary = {"out": str(out), "no": imported.no, "next_update": imported.next_update,
               "models": len(imported.models), "skipped": imported.skipped}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"imported BLOB no. {imported.no} (next update {imported.next_update}): {len(imported.models)} models "
              f"kept in {out}")
        for reason, n in sorted(imported.skipped.items(), key=lambda kv: -kv[1]):
            print(f"  skipped {n}: {reason}")
        print("then: webauthn.attestation_mds: " + str(out.resolve()) + "  (and reload the gateway: SIGHUP)")
    return 0
