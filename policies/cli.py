"""`ztgate policy check DIR` and `ztgate policy test DIR` (the lead wires these into the ztgate command)."""

from __future__ import annotations

import argparse
import json
import sys

from .diagnostics import Diagnostic
from .loader import check_directory
from .testing import run_tests


def _print_diagnostic(d: Diagnostic, out) -> None:
    label = "warning: " if d.severity == "warning" else ""
    print(f"{d.file}:{d.line}:{d.column}: {label}{d.message}", file=out)
    if d.hint:
        print(f"    hint: {d.hint}", file=out)


def check_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ztgate policy check", description="Check a directory of policy files.")
    parser.add_argument("directory")
    parser.add_argument("--json", action="store_true", help="print diagnostics as JSON")
    args = parser.parse_args(argv)
    diagnostics = check_directory(args.directory)
    errors = [d for d in diagnostics if d.severity == "error"]
    if args.json:
        print(json.dumps({"ok": not errors, "diagnostics": [d.to_dict() for d in diagnostics]}, indent=2))
        return 1 if errors else 0
    for d in diagnostics:
        _print_diagnostic(d, sys.stdout)
    warnings = len(diagnostics) - len(errors)
    if errors:
        print(f"{len(errors)} error(s), {warnings} warning(s): nothing would be loaded", file=sys.stdout)
        return 1
    from .loader import load_directory  # only reached when loading succeeds

    policy_set = load_directory(args.directory)
    print(f"ok: {len(policy_set.policies)} policies, {len(policy_set.rules)} rules in {len(policy_set.files)} "
          f"file(s), {warnings} warning(s), digest {policy_set.digest[:12]}")
    return 0


def test_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ztgate policy test", description="Run the policy tests beside the policies.")
    parser.add_argument("directory")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = run_tests(args.directory)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0 if report.ok else 1


if __name__ == "__main__":  # python -m policies.cli check|test DIR
    command, rest = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    sys.exit({"check": check_main, "test": test_main}.get(command, lambda _: (print("usage: check|test DIR"), 2)[1])(rest))
