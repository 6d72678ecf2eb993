"""`ztgate users add|list|remove`: edit the built-in user directory file."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from gateway.auth.directory import DirectoryError, add_user, list_users, remove_user
from gateway.auth.totp import provisioning_uri


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ztgate users", description="Manage the built-in user directory.")
    commands = parser.add_subparsers(dest="command", required=True)

    add = commands.add_parser("add", help="add a user; prints its TOTP secret once")
    add.add_argument("username")
    add.add_argument("--email", required=True)
    add.add_argument("--name", help="display name (default: the username)")
    add.add_argument("--group", dest="groups", action="append", default=[], help="repeat for several groups")
    add.add_argument("--site", help="the user's claimed work site")
    add.add_argument("--country", help="the user's claimed country, ISO 3166-1 alpha-2 (e.g. DE)")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of stdin instead of prompting")

    listing = commands.add_parser("list", help="list users (never shows secrets)")
    listing.add_argument("--json", action="store_true", help="one JSON document")

    remove = commands.add_parser("remove", help="remove a user")
    remove.add_argument("username")
    return parser


def _read_password(from_stdin: bool, stdin: TextIO) -> str:
    if from_stdin:
        return stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise DirectoryError(None, "the passwords do not match")
    return first


def main(argv: Sequence[str], directory_path: str | os.PathLike[str], *, stdin: TextIO | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Returns the exit status: 0 done, 1 refused (the message says why), 2 usage error."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:  # argparse has printed the usage
        return int(exc.code or 0)
    try:
        if args.command == "add":
            password = _read_password(args.password_stdin, stdin)
            user, secret = add_user(directory_path, args.username, password, args.groups, args.email,
                                    args.site, args.country.upper() if args.country else None, name=args.name)
            print(f"added {user.username} to {directory_path}", file=stdout)
            print("TOTP secret (shown once; enrol it in an authenticator app now):", file=stdout)
            print(f"  {secret}", file=stdout)
            print(f"  {provisioning_uri(secret, user.username)}", file=stdout)
        elif args.command == "list":
            users = list_users(directory_path) if os.path.exists(directory_path) else []
            if args.json:
                json.dump([u.public_dict() for u in users], stdout, indent=2)
                print(file=stdout)
            else:
                for u in users:
                    flags = " (disabled)" if u.disabled else ""
                    print(f"{u.username}\t{u.email}\t{','.join(u.groups) or '-'}\t{u.site or '-'}\t"
                          f"{u.country or '-'}{flags}", file=stdout)
        else:
            removed = remove_user(directory_path, args.username)
            print(f"removed {removed.username} from {directory_path}", file=stdout)
    except DirectoryError as exc:
        print(f"ztgate users: {exc}", file=stderr)
        return 1
    except KeyboardInterrupt:
        print("ztgate users: interrupted; nothing changed", file=stderr)
        return 1
    return 0
