"""`ztgate`: run the gateway, administer it, evaluate and benchmark it."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
from typing import Sequence

from .. import config as config_mod
from .configfile import load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ztgate", description="Zero-trust access gateway with continuous authentication")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the gateway on an embedded default with a demo app and demo users")
    demo.add_argument("--listen", default="127.0.0.1:8080", help="address to listen on (default 127.0.0.1:8080)")
    demo.add_argument("--state-dir", default="var/demo", help="where the demo keeps its event files")
    demo.add_argument("--ready-file", help=argparse.SUPPRESS)  # tests: where to write URL and demo credentials

    run = sub.add_parser("run", help="run the gateway from a config file")
    run.add_argument("--config", "-c", required=True)
    run.add_argument("--check", action="store_true", help="validate the config (and policies) and exit")
    run.add_argument("--workers", type=int, default=1, help="processes sharing the listening ports")
    run.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the supervisor: this is worker N

    up = sub.add_parser("demo-upstream", help="run only the demo upstream app (for compose and tests)")
    up.add_argument("--listen", default="127.0.0.1:9000")
    up.add_argument("--jwks-url", required=True)
    up.add_argument("--audience", default="demo")

    users = sub.add_parser("users", help="manage the built-in user directory")
    users.add_argument("--directory", help="users file (default: identity.directory of --config)")
    users.add_argument("--config", "-c")
    users.add_argument("args", nargs=argparse.REMAINDER, help="add USER ... | list | remove USER")

    for name, helptext in (("sessions", "list, show or terminate sessions (admin API)"),
                           ("profiles", "list, show or reset typing profiles (admin API)")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("action", choices=["list", "show", "terminate", "step-up"] if name == "sessions"
                       else ["list", "show", "reset", "import"])
        s.add_argument("target", nargs="?", help="SID or USER (put options first and `--` before a value starting with '-')")
        if name == "profiles":
            s.add_argument("file", nargs="?", help="import: a profile file (scoring.Profile.to_bytes())")
        _client_args(s)

    locks = sub.add_parser("locks", help="list locked accounts, or lift a lock (admin API)")
    locks.add_argument("action", choices=["list", "remove"])
    locks.add_argument("target", nargs="?", help="remove: USER (as `locks list` shows it)")
    _client_args(locks)

    pol = sub.add_parser("policy", help="check, test and explain policies")
    pol.add_argument("action", choices=["check", "test", "explain"])
    pol.add_argument("target", help="policy directory (check, test) or SID (explain)")
    _client_args(pol)

    ev = sub.add_parser("events", help="security events: tail, status, verify a webhook signature, dead letters")
    ev.add_argument("--config", "-c")
    ev.add_argument("args", nargs=argparse.REMAINDER)

    ev2 = sub.add_parser("eval", help="measure the scoring engine on the shared datasets")
    ev2.add_argument("args", nargs=argparse.REMAINDER)

    bench = sub.add_parser("bench", help="benchmarks: proxy, scoring, policy, events, sensor, capture")
    bench.add_argument("target", choices=["proxy", "scoring", "policy", "events", "sensor", "capture", "enforce",
                                                    "workers"])
    bench.add_argument("args", nargs=argparse.REMAINDER)

    keys = sub.add_parser("keys", help="signing keys in a directory the gateway cannot write: init, list, rotate, prune")
    keys.add_argument("args", nargs=argparse.REMAINDER)

    wa = sub.add_parser("webauthn", help="security keys: import the FIDO Metadata Service (mds-import)")
    wa.add_argument("args", nargs=argparse.REMAINDER)

    sc = sub.add_parser("scenario", help="end-to-end takeover scenarios")
    sc.add_argument("args", nargs=argparse.REMAINDER)
    return p


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="gateway config (gives the URL and admin token)")
    p.add_argument("--url", default=os.environ.get("ZTGATE_URL"), help="gateway URL (or ZTGATE_URL)")
    p.add_argument("--token", default=os.environ.get("ZTGATE_ADMIN_TOKEN"), help="admin token (or ZTGATE_ADMIN_TOKEN)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--ca", default=os.environ.get("ZTGATE_CA"),
                   help="CA bundle to check the gateway's certificate against (or ZTGATE_CA); default: system CAs")
    p.add_argument("--insecure", action="store_true", default=os.environ.get("ZTGATE_INSECURE") == "1",
                   help="send the admin token without checking the gateway's certificate (loopback is never checked)")


def _setup_logging(level: str = "info", fmt: str = "text") -> None:
    from ..telemetry.logs import configure_logging

    configure_logging(level=level, fmt=fmt)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["scenario"]:  # its own options (--all, --json ...) would trip the REMAINDER parser here
        from bench.scenarios.runner import main as scenario_main

        return scenario_main(argv[1:])
    if argv[:1] == ["keys"]:  # likewise
        from ..auth.keys_cli import main as keys_main

        return keys_main(argv[1:])
    if argv[:2] == ["webauthn", "mds-import"]:  # likewise
        from ..auth.mds_cli import main as mds_main

        return mds_main(argv[2:])
    args = _parser().parse_args(argv)
    cmd = args.command
    if cmd == "demo":
        from .demo import run_demo

        _setup_logging()
        return asyncio.run(run_demo(args.listen, args.state_dir, ready_file=args.ready_file))
    if cmd == "run":
        return _run(args)
    if cmd == "demo-upstream":
        return _demo_upstream(args)
    if cmd == "users":
        from ..auth.users_cli import main as users_main

        directory = args.directory or (load_config(args.config).identity.directory if args.config else None)
        if not directory:
            print("ztgate users: give --directory FILE or --config FILE with identity.directory", file=sys.stderr)
            return 2
        return users_main(args.args, directory)
    if cmd in ("sessions", "profiles", "locks"):
        from .client import admin_command

        return admin_command(cmd, args)
    if cmd == "policy":
        import policies.cli as pcli

        if args.action == "check":
            return pcli.check_main([args.target])
        if args.action == "test":
            return pcli.test_main([args.target])
        from .client import admin_command

        return admin_command("explain", args)
    if cmd == "events":
        from ..secevents.cli import main as events_main

        cfg = load_config(args.config) if args.config else None
        events_cfg = cfg.events if cfg else None
        redis_url = cfg.store.url if cfg and cfg.store.is_redis else None
        if events_cfg is None:
            from ..secevents import EventsConfig

            events_cfg = EventsConfig.from_dict(None)
        return events_main(args.args, events_cfg, redis_url)
    if cmd == "eval":
        from scoring.eval.cli import main as eval_main

        return eval_main(args.args)
    if cmd == "bench":
        module = importlib.import_module(f"bench.{args.target}")
        return module.main(args.args)
    if cmd == "scenario":
        from bench.scenarios.runner import main as scenario_main

        return scenario_main(args.args)
    if cmd == "webauthn":  # anything but "mds-import" (handled before parsing)
        print("ztgate webauthn: the one action is mds-import BLOB --root ROOT.pem --out FILE", file=sys.stderr)
        return 2
    return 2


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.check:
        from ..policy_watch import PolicyHolder
        import policies

        holder = PolicyHolder(cfg.policies.dir)
        try:
            holder.load_initial()
        except policies.PolicyLoadError as err:
            for d in err.diagnostics:
                print(d, file=sys.stderr)
            return 2
        print(json.dumps({"config": cfg.source, "ok": True, "routes": [r.name for r in cfg.routes],
                          "listeners": [str(listener.address) for listener in cfg.listeners],
                          "policies": str(holder.directory)}))
        return 0
    _setup_logging(cfg.telemetry.log_level, cfg.telemetry.log_format)
    if args.workers < 1:
        print("ztgate run: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and args.worker is None:
        from ..supervisor import supervise

        return supervise(args.config, args.workers)
    return asyncio.run(_serve(cfg, worker=args.worker))


async def _serve(cfg: config_mod.Config, worker: int | None = None) -> int:
    import signal

    from ..auth.keys import KeyRingError
    from ..runtime import Gateway, StartupError

    # a reload asked for while still starting must not kill the process (SIGHUP's default); it is handled
    # once the gateway runs, and the config it starts with is read fresh anyway
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    try:
        # ZTGATE_WORKER_HEADER=1 (debug, tests): every response names the worker process that served it
        gw = Gateway(cfg, shared_listeners=worker is not None,
                     worker_header=os.environ.get("ZTGATE_WORKER_HEADER") == "1")
        await gw.run_until_signalled()
    except (StartupError, KeyRingError) as err:
        logging.getLogger("ztgate").error("cannot start: %s", err)
        print(f"ztgate: cannot start: {err}", file=sys.stderr)
        return 2
    return 0


def _demo_upstream(args: argparse.Namespace) -> int:
    from ..config import parse_address
    from ..demo.upstream import serve

    address = parse_address(args.listen, ("--listen",))

    async def go() -> int:
        server = await serve(address.host, address.port, jwks_url=args.jwks_url, audience=args.audience,
                             issuer="ztgate")
        print(f"demo upstream on {server.url}", flush=True)
        await server.wait()
        return 0

    return asyncio.run(go())


if __name__ == "__main__":
    sys.exit(main())
