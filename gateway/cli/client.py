"""The admin CLI commands talk to a running gateway's admin API over HTTP, like any other admin client."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import ipaddress
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import httpx

from ..text import printable, printable_tree


@dataclass(frozen=True)
class Target:
    url: str
    token: str
    verify: bool | str  # httpx's verify: True (system CAs), a CA bundle path, or False


def _target(args: argparse.Namespace) -> Target:
    url, token = args.url, args.token
    if args.config and (not url or not token):
        from .configfile import load_config

        cfg = load_config(args.config)
        if not url:
            listener = cfg.listeners[0]
            host = "127.0.0.1" if listener.address.host in ("0.0.0.0", "::") else listener.address.host
            url = f"{'https' if listener.tls else 'http'}://{host}:{listener.address.port}"
        token = token or cfg.admin.token
    if not url or not token:
        raise SystemExit("ztgate: give --url and --token (or ZTGATE_URL and ZTGATE_ADMIN_TOKEN, or --config)")
    url = url.rstrip("/")
    return Target(url, token, tls_verification(url, getattr(args, "ca", None), getattr(args, "insecure", False)))


def tls_verification(url: str, ca: str | None, insecure: bool) -> bool | str:
    """The admin token goes only to a gateway whose certificate checks out, except on loopback (the gateway's own
    host: nobody sits between) or when the admin says --insecure. --ca names the CA of a private PKI."""
    if insecure:
        return False
    if ca:
        return ca
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def _call(method: str, target: Target, path: str, body: Any = None) -> tuple[int, Any]:
    try:
        r = httpx.request(method, f"{target.url}/.ztgate/admin/api{path}",
                          headers={"Authorization": f"Bearer {target.token}", "Accept": "application/json"},
                          json=body, timeout=10.0, verify=target.verify)
    except httpx.HTTPError as exc:
        raise SystemExit(f"ztgate: cannot reach the gateway at {target.url}: {exc}") from None
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, {"error": r.text[:200]}


def admin_command(kind: str, args: argparse.Namespace) -> int:
    gateway = _target(args)
    action, target = getattr(args, "action", None), getattr(args, "target", None)
    needs_target = {"show", "terminate", "step-up", "reset", "import", "remove"}
    if kind != "explain" and action in needs_target and not target:
        print(f"ztgate {kind} {action}: missing SID/USER", file=sys.stderr)
        return 2
    if kind == "profiles" and action == "import":
        return _import_profile(gateway, target, getattr(args, "file", None), args.json)
    if kind == "sessions":
        method, path = {"list": ("GET", "/sessions"), "show": ("GET", f"/sessions/{target}"),
                        "terminate": ("POST", f"/sessions/{target}/terminate"),
                        "step-up": ("POST", f"/sessions/{target}/step-up")}[action]
    elif kind == "profiles":
        method, path = {"list": ("GET", "/profiles"), "show": ("GET", f"/profiles/{target}"),
                        "reset": ("DELETE", f"/profiles/{target}")}[action]
    elif kind == "locks":
        method, path = ("GET", "/locks") if action == "list" else ("DELETE", f"/locks/{quote(target, safe='')}")
    else:
        method, path = "GET", f"/sessions/{target}/explain"
    status, data = _call(method, gateway, path)
    if status >= 400:
        print(printable(f"ztgate: {status} {data.get('error')}: {data.get('error_description', '')}"),
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))  # json escapes control characters itself
        return 0
    print(_human(kind, action, printable_tree(data)))
    return 0


def _import_profile(gateway: Target, user: str, file: str | None, as_json: bool) -> int:
    """`ztgate profiles import USER FILE`: upload a profile built offline; the gateway checks that it loads."""
    from pathlib import Path

    if not file:
        print("ztgate profiles import: missing FILE", file=sys.stderr)
        return 2
    try:
        blob = Path(file).read_bytes()
    except OSError as exc:
        print(f"ztgate profiles import: cannot read {file}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        r = httpx.put(f"{gateway.url}/.ztgate/admin/api/profiles/{quote(user, safe='')}", content=blob, timeout=10.0,
                      verify=gateway.verify,
                      headers={"Authorization": f"Bearer {gateway.token}", "Content-Type": "application/octet-stream"})
    except httpx.HTTPError as exc:
        raise SystemExit(f"ztgate: cannot reach the gateway at {gateway.url}: {exc}") from None
    try:
        data = r.json()
    except ValueError:
        data = {"error": r.text[:200]}
    if r.status_code >= 400:
        print(f"ztgate: {r.status_code} {data.get('error')}: {data.get('error_description', '')}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2) if as_json else
          f"profile of {user} {'replaced' if data.get('replaced') else 'imported'} ({data.get('bytes')} bytes)")
    return 0


def _human(kind: str, action: str | None, data: dict) -> str:
    if kind == "explain":
        return data.get("text", "")
    if kind == "locks" and action == "list":
        import time

        rows = [f"{'USER':24} {'UNTIL (UTC)':20} REASON"]
        for lock in data["locks"]:
            user = lock["user"] if lock.get("known", True) else f"{lock['user']} (unknown name)"
            rows.append(f"{user[:40]:24} {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(lock['until'])):20} "
                        f"{lock.get('reason', '')}")
        return "\n".join(rows) if data["locks"] else "no account is locked"
    if kind == "locks":
        return f"{data['user']} unlocked"
    if kind == "sessions" and action == "list":
        rows = [f"{'SID':26} {'USER':12} {'STATE':17} {'RISK':>5} {'ROUTE':12} {'CLIENT':15} CONNS"]
        for s in data["sessions"]:
            risk = s.get("assessment", {}).get("risk")
            rows.append(f"{s['sid']:26} {s['sub'][:12]:12} {s['state']:17} "
                        f"{'-' if risk is None else f'{risk:.2f}':>5} {s['route'][:12]:12} {s['client_ip'][:15]:15} "
                        f"{s.get('connections', 0)}")
        return "\n".join(rows)
    if kind == "sessions":
        a = data.get("assessment") or {}
        lines = [f"session {data['sid']}  user {data['sub']}  state {data['state']}"
                 + (f" ({data['state_reason']})" if data.get("state_reason") else ""),
                 f"  from {data['client_ip']}  route {data['route']}  acr {data['acr']}  amr {','.join(data['amr'])}",
                 f"  risk {a.get('risk', '-')}  evidence {a.get('evidence', {})}"]
        for name, s in (a.get("signals") or {}).items():
            lines.append(f"  {name:10} score {s.get('score')}  {s.get('explanation', '')}")
        if data.get("decision"):
            d = data["decision"]
            lines.append(f"  last decision: {d.get('action')} by {d.get('policy_file')}:{d.get('rule_id')}: "
                         f"{d.get('reason')}")
        return "\n".join(lines)
    if kind == "profiles" and action == "list":
        return "\n".join(data.get("profiles", [])) or "(no profiles)"
    return json.dumps(data, indent=2)
