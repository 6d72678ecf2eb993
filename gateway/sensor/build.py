"""Builds sensor.min.js from sensor.js with terser (a developer step; the output is committed).

    npm install --prefix /tmp/terser terser@5.51.2
    .venv/bin/python -m gateway.sensor.build [--terser /tmp/terser/node_modules/.bin/terser]

The first line of the output names the SHA-256 of the source it was built from, so a test can tell whether the
committed minified file is up to date without running node (file times do not survive a git checkout).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "sensor.js"
OUTPUT = HERE / "sensor.min.js"
DEFAULT_TERSER = "/tmp/terser/node_modules/.bin/terser"
TERSER_ARGS = ["--compress", "passes=2", "--mangle", "--ecma", "2015", "--comments", "false"]
HEADER_PREFIX = "/*! ztgate sensor; source sha256="


def source_digest(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()


def header(source: bytes) -> str:
    return f"{HEADER_PREFIX}{source_digest(source)} */\n"


def built_from(minified: str) -> str | None:
    """The source digest a minified file declares, or None if it has no header."""
    first = minified.split("\n", 1)[0]
    if not first.startswith(HEADER_PREFIX):
        return None
    return first[len(HEADER_PREFIX) :].split(" ", 1)[0]


def build(terser: str = DEFAULT_TERSER) -> str:
    source = SOURCE.read_bytes()
    result = subprocess.run([terser, str(SOURCE), *TERSER_ARGS], capture_output=True, check=True)
    minified = header(source) + result.stdout.decode().strip() + "\n"
    OUTPUT.write_text(minified)
    return minified


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terser", default=DEFAULT_TERSER, help="path to the terser executable")
    args = parser.parse_args(argv)
    try:
        minified = build(args.terser)
    except FileNotFoundError:
        print(f"terser not found at {args.terser}; see this module's docstring", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(exc.stderr.decode(), file=sys.stderr)
        return 1
    print(f"{OUTPUT.name}: {len(minified.encode())} bytes (source {SOURCE.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
