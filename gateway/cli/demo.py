"""`ztgate demo`: the whole gateway on an embedded default, with a demo app and demo users, nothing to set up."""

from __future__ import annotations

import asyncio
import secrets
import signal
import sys
from pathlib import Path

import yaml

from ..auth.directory import Directory, new_user
from ..auth.keys import KeyRing
from ..auth.totp import new_secret, provisioning_uri
from ..config import loads
from ..runtime import Gateway

DEMO_USERS = (
    # username, groups, email, site, country
    ("alice", ["engineering", "ztgate-admins"], "alice@demo.example", "berlin", "DE"),
    ("bob", ["finance"], "bob@demo.example", "austin", "US"),
)


def demo_config(*, listen: str, upstream_port: int, state_dir: str, admin_token: str) -> str:
    upstream = f"http://127.0.0.1:{upstream_port}"
    doc = {
        "instance": "demo",
        "state_dir": state_dir,
        "listeners": [{"address": listen}],
        "routes": [
            {"name": "demo", "upstream": upstream, "audience": "demo"},
            {"name": "demo-terminal", "kind": "terminal", "path_prefix": "/ws/terminal", "upstream": upstream,
             "audience": "demo"},
        ],
        "store": {"url": "memory://"},
        "admin": {"token": admin_token, "groups": ["ztgate-admins"]},
        "scoring": {"enrol_keystrokes": 300},
        "events": {"outbox": {"path": str(Path(state_dir, "outbox"))},
                   "sinks": [{"type": "jsonl", "path": str(Path(state_dir, "security-events.jsonl"))}]},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def demo_users() -> tuple[Directory, list[tuple[str, str, str]]]:
    users, shown = [], []
    for username, groups, email, site, country in DEMO_USERS:
        password = secrets.token_urlsafe(12)
        secret = new_secret()
        user, _ = new_user(username, password, email=email, groups=groups, site=site, country=country,
                           totp_secret=secret)
        users.append(user)
        shown.append((username, password, secret))
    return Directory.in_memory(users), shown


async def run_demo(listen: str, state_dir: str, *, ready_file: str | None = None) -> int:
    from ..demo.upstream import serve

    keyring = KeyRing.ephemeral(max_token_lifetime=12 * 3600)
    upstream = await serve("127.0.0.1", 0, jwks_url=None, jwks=keyring.jwks(), audience="demo", issuer="ztgate")
    admin_token = secrets.token_urlsafe(24)
    directory, shown = demo_users()
    config = loads(demo_config(listen=listen, upstream_port=upstream.port, state_dir=state_dir,
                               admin_token=admin_token), file="<demo>")
    gw = Gateway(config, directory=directory, keyring=keyring)
    await gw.start()
    host, port = gw.listen_addrs[0][:2]
    url = f"http://{host}:{port}/"
    lines = [
        "",
        f"ztgate demo is running: open {url}",
        f"  demo app (behind the gateway): {upstream.url}   admin token: {admin_token}",
        "  users (password, TOTP secret; get a code with: python -c \"import pyotp; print(pyotp.TOTP('SECRET').now())\"):",
    ]
    for username, password, secret in shown:
        lines.append(f"    {username:6} password {password}   totp {secret}")
        lines.append(f"           {provisioning_uri(secret, username)}")
    lines += [f"  admin API: curl -H 'Authorization: Bearer {admin_token}' {url}.ztgate/admin/api/sessions",
              f"  security events: {Path(state_dir, 'security-events.jsonl')}", "  Ctrl-C stops it.", ""]
    print("\n".join(lines), flush=True)
    if ready_file:
        import json

        Path(ready_file).write_text(json.dumps({
            "url": url, "admin_token": admin_token, "upstream": upstream.url,
            "users": [{"username": u, "password": p, "totp_secret": s} for u, p, s in shown]}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await gw.stop()
    await upstream.stop()
    print("ztgate demo stopped", file=sys.stderr)
    return 0
