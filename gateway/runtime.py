"""One gateway process: builds every part from the validated config, runs mitmproxy and the control plane in
one event loop, and shuts them down cleanly."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any, Coroutine

import uvicorn

from .auth.csrf import CsrfTokens
from .auth.directory import Directory
from .auth.keys import KeyRing
from .auth.tokens import AssertionSigner, SessionTokens, TokenError
from .auth.lockout import Lockouts
from .auth.totp import TotpVerifier
from .config import Config, Route
from .enforce import Enforcer
from .monitor import Monitor
from .policy_watch import PolicyHolder
from .proxy.connections import ConnectionRegistry
from .sessions import Sessions
from .store import SessionRecord, StoreUnavailable, open_store
from .telemetry import Telemetry

log = logging.getLogger("ztgate")

ISSUER = "ztgate"


class StartupError(Exception):
    """The gateway cannot start; the message says why and what to do."""


class Gateway:
    def __init__(self, config: Config, *, directory: Directory | None = None, keyring: KeyRing | None = None,
                 shared_listeners: bool = False, worker_header: bool = False) -> None:
        self.config = config
        from .proxy.master import Lifecycle

        # shared_listeners: one of several worker processes on the same ports (`ztgate run --workers N`)
        self.lifecycle = Lifecycle(reuse_port=shared_listeners, worker_header=worker_header)
        self.draining = False
        self.telemetry = Telemetry(config.instance, config.telemetry)
        self.store = open_store(config.store.url, prefix=config.store.prefix)
        self.sessions = Sessions(self.store, config.session, config.store)
        if keyring is None:
            # Retired keys stay published for a whole session lifetime: an idle browser's expired cookie token
            # must still verify so that its live server-side session can refresh it.
            lifetime = max(config.session.max_lifetime, config.session.token_ttl, 600)
            keyring = (KeyRing.load_or_create(config.keys.dir, config.keys.algorithm, max_token_lifetime=lifetime)
                       if config.keys.dir else KeyRing.ephemeral(config.keys.algorithm, max_token_lifetime=lifetime))
        self.keyring = keyring
        self.tokens = SessionTokens(keyring, ISSUER, ttl=config.session.token_ttl)
        self.signer = AssertionSigner(keyring, ISSUER)
        self.directory = directory
        if self.directory is None and config.identity.directory:
            self.directory = Directory.load(config.identity.directory)
        lockout = config.identity.lockout
        self.totp = TotpVerifier(self.store, max_attempts=lockout.totp_max_attempts, attempt_window=lockout.window)
        self.lockouts = Lockouts(self.store, lockout, keyring.shared_secret("lockout"),
                                 totp_attempts_key=self.totp.attempts_key)
        self.csrf = CsrfTokens(keyring.shared_secret("csrf"), self.store)
        self.sensor_secret = keyring.shared_secret("sensor")
        self.state_secret = keyring.shared_secret("login-state")
        self.policies = PolicyHolder(config.policies.dir, config.policies.reload_interval,
                                     on_rejected=self._policy_rejected)
        self.connections = ConnectionRegistry()
        self.monitor = Monitor(self)
        self.enforcer = Enforcer(self)
        self.events: Any = None
        self.oidc: dict[str, Any] = {}
        self.internal_secret = secrets.token_urlsafe(32)
        self.control_port = 0
        self.listen_addrs: list[tuple[str, int]] = []
        self._routes = {r.name: r for r in config.routes}
        self._assertions: dict[tuple[str, int, str], tuple[str, float]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._server: uvicorn.Server | None = None
        self._master: Any = None
        self.started = asyncio.Event()
        self.ready = False
        from .capture_hub import CaptureHub
        from .sensor_bridge import SensorBridge

        self.capture = CaptureHub(self)
        self.injector = SensorBridge(self)

    # ------------------------------------------------------------------ helpers the addon and control plane use

    def route_named(self, name: str) -> Route | None:
        return self._routes.get(name)

    def tcp_route_for(self, sockname: Any) -> Route | None:
        if not sockname:
            return None
        port = sockname[1]
        for route in self.config.routes:
            if route.listen is not None and route.listen.port == port:
                return route
        return None

    async def sessions_for_address(self, client_ip: str, route: Route | None) -> SessionRecord | None:
        """Raw VNC carries no cookie: its connection belongs to the newest live session from the same address."""
        try:
            candidates = [r for r in await self.sessions.list()
                          if r.client_ip == client_ip and not r.terminated and r.expires > time.time()
                          and not self.sessions.is_revoked(r.sid)]
        except StoreUnavailable:
            return None
        return max(candidates, key=lambda r: r.last_seen, default=None)

    def issue_session_token(self, record: SessionRecord) -> str:
        return self.tokens.issue(record.sid, record.sub, record.acr, record.amr, record.auth_time,
                                 gen=int(record.step_up.get("count", 0)))

    def verify_expired_token(self, token: str) -> Any:
        """Claims of a correctly signed session token that has expired. The server-side session decides whether
        it still stands (it is looked up next); this is what lets an idle browser come back without a login."""
        import jwt

        try:
            exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
            if not isinstance(exp, int) or time.time() - exp > self.config.session.max_lifetime:
                return None
            return self.tokens.verify(token, now=exp - 1)
        except (jwt.PyJWTError, TokenError):
            return None

    def session_cookie(self, token: str, tls: bool) -> str:
        from .access import session_cookie

        return session_cookie(self.config.session.cookie_name, token, secure=self.cookie_secure(tls),
                              max_age=self.config.session.max_lifetime)

    def cookie_secure(self, tls: bool) -> bool:
        mode = self.config.session.secure
        return mode == "always" or (mode == "auto" and tls)

    def assertion_for(self, record: SessionRecord, route: Route) -> str:
        """The signed identity assertion for a request of this session to this route's upstream.

        Reused, as a dict lookup, for the same (session, session version, audience) while more than the
        signer's `reuse_margin` (20 s) of its lifetime (60 s) is left: an upstream never gets one with less
        than 20 s to live. Any change of the session (state, restrictions, step-up: every save) bumps its
        version, so the next request gets a freshly built one (ztgate_state and the rest as they are now)."""
        key = (record.sid, record.version, route.audience)
        cached = self._assertions.get(key)
        now = self.signer.clock()
        if cached is not None and cached[1] > now:
            return cached[0]
        signed = self.signer.signed(route.audience, {
            "sub": record.sub, "email": record.email, "name": record.name, "groups": list(record.groups),
            "sid": record.sid, "acr": record.acr, "amr": list(record.amr), "auth_time": int(record.auth_time),
            "ztgate_state": record.state,
        }, now=now)
        if len(self._assertions) > 50_000:
            self._assertions.clear()
        self._assertions[key] = (signed.token, signed.exp - self.signer.reuse_margin)
        return signed.token

    def new_integrity(self) -> Any:
        return self.injector.new_integrity()

    def spawn(self, coro: Coroutine, *, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def _policy_rejected(self, directory: str, diagnostics: list[str]) -> None:
        self.telemetry.count("ztgate_policy_reload_rejected_total")
        if self.events is not None:
            try:
                await self.events.emit_policy_rejected(directory, diagnostics)
            except Exception:
                log.exception("could not record the policy rejection event")

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        cfg = self.config
        _warn_if_metadata_stale(cfg)
        try:
            await self.store.start()
        except StoreUnavailable as exc:
            raise StartupError(f"{exc}\n    hint: start Redis, fix store.url in {cfg.source}, or use "
                               "store: memory:// for a single process") from None
        await self.sessions.start()
        self.sessions.on_change(self.enforcer.on_session_change)
        self.store.subscribe(self._on_broadcast)
        # a store several processes share: each session is scored by one of them (gateway/ownership.py)
        await self.monitor.ownership.start(self.monitor.receive, self.monitor.heartbeat)
        import policies as policies_pkg

        try:
            self.policies.load_initial()
        except policies_pkg.PolicyLoadError as err:
            raise StartupError("policies are invalid:\n" + "\n".join(str(d) for d in err.diagnostics)) from None
        await self._start_events()
        self._start_telemetry()
        await self._start_oidc()
        await self._start_control_plane()
        await self._start_proxy()
        self.spawn(self.policies.watch(), name="ztgate-policy-watch")
        self.spawn(self._housekeeping(), name="ztgate-housekeeping")
        self.ready = True
        self.started.set()

    async def _start_events(self) -> None:
        try:
            from .secevents import SecurityEvents
        except ImportError:
            log.warning("security events are not available in this build")
            return
        redis_url = self.config.store.url if self.config.store.is_redis else None
        # with a Redis outbox, an event Redis cannot take during an outage waits in a local spool, not lost
        self.events = SecurityEvents(self.config.events, self.config.instance, redis_url,
                                     spool_dir=str(Path(self.config.state_dir) / "events-spool"))
        await self.events.start()

    def _start_telemetry(self) -> None:
        from .telemetry.gauges import GatewayGauges

        self.telemetry.start()
        if self.telemetry.metrics_exporter is not None:
            self.spawn(self.telemetry.metrics_exporter.run(), name="ztgate-otlp-metrics")
        gauges = GatewayGauges(self)
        gauges.register()
        self.spawn(gauges.run(), name="ztgate-telemetry-gauges")

    async def _start_oidc(self) -> None:
        if not self.config.identity.oidc:
            return
        import httpx

        from .auth.oidc import OidcProvider

        self._http = httpx.AsyncClient(timeout=10.0)
        for provider_cfg in self.config.identity.oidc:
            self.oidc[provider_cfg.name] = OidcProvider(provider_cfg, self._http)

    async def _start_control_plane(self) -> None:
        from .control.app import create_app

        app = create_app(self)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False,
                                lifespan="off", ws_max_size=256 * 1024, proxy_headers=False)
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # the CLI owns signals
        self.spawn(self._server.serve(), name="ztgate-control-plane")
        while not self._server.started:
            await asyncio.sleep(0.01)
        sock = self._server.servers[0].sockets[0]
        self.control_port = sock.getsockname()[1]

    async def _start_proxy(self) -> None:
        from .proxy.master import build_master

        self._master = build_master(self, self.lifecycle)
        self.spawn(self._master.run(), name="ztgate-proxy")
        proxyserver = self._master.addons.get("proxyserver")
        for _ in range(500):
            if proxyserver.servers and all(s.is_running for s in proxyserver.servers):
                break
            await asyncio.sleep(0.01)
        else:
            raise StartupError("the proxy listeners did not come up (port in use?)")
        self.listen_addrs = [a[:2] for a in proxyserver.listen_addrs()]

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(30)
            try:
                await self.monitor.sweep_ended()
            except Exception:
                log.exception("ending expired sessions failed")
            try:
                self.keyring.refresh()
                if self.keyring.directory is not None:
                    # file-locked: one process of those sharing the directory rotates, the others pick it up
                    self.keyring.rotate_if_older(self.config.keys.rotate_every)
                    self.keyring.prune()
                self.telemetry.gauge("ztgate_live_connections", self.connections.total())
            except Exception:
                log.exception("housekeeping failed")

    async def _on_broadcast(self, message: dict) -> None:
        if message.get("type") == "reset_evidence":
            await self.monitor.reset_evidence(message.get("sid", ""))

    async def stop(self) -> None:
        self.ready = False
        if self._master is not None:
            from .proxy.master import stop_master

            await stop_master(self._master)
        if self._server is not None:
            self._server.should_exit = True
        for task in list(self._tasks):
            if task.get_name() in ("ztgate-control-plane", "ztgate-proxy"):
                continue
            task.cancel()
        await asyncio.sleep(0)
        if self._server is not None:
            for _ in range(100):
                if not any(t.get_name() == "ztgate-control-plane" for t in self._tasks):
                    break
                await asyncio.sleep(0.02)
        if self.events is not None:
            await self.events.stop()
        await self.telemetry.aclose()  # flushes the last spans and metrics
        try:  # the sessions scored here go to the next process that sees them, with their evidence
            await self.monitor.release_all()
        except Exception:
            log.exception("could not hand over the sessions scored here")
        await self.store.close()

    async def run_until_signalled(self) -> None:
        """SIGTERM/SIGINT: drain for `shutdown_grace` seconds, then stop (a second signal ends the drain now).
        SIGHUP: reload the config, the policies and the user directory without dropping connections."""
        await self.start()
        stop, hurry = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_stop_signal() -> None:
            (hurry if stop.is_set() else stop).set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, lambda: self.spawn(self.reload(), name="ztgate-reload"))
        await stop.wait()
        loop.add_signal_handler(signal.SIGHUP, lambda: log.info("reload ignored: shutting down"))
        await self.drain(hurry=hurry)
        await self.stop()

    async def drain(self, grace: float | None = None, *, hurry: asyncio.Event | None = None) -> int:
        """Graceful shutdown, first half: /readyz answers 503, the listeners close (new connections are refused
        or go to the other workers), HTTP/1 responses carry `Connection: close`, idle keep-alive connections are
        closed, open requests finish and open WebSockets and TCP streams carry on until the deadline; whatever is
        left then is cut. Returns how many connections were cut at the deadline."""
        from .proxy.master import close_listeners, cut_clients, live_client_ids

        grace = self.config.shutdown_grace if grace is None else grace
        self.ready = False
        self.draining = self.lifecycle.draining = True
        if self._master is None:
            return 0
        await close_listeners(self._master)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # an idle keep-alive connection gets a moment first: a request already on its way still gets its answer
        idle_after = min(2.0, grace / 4)
        log.info("draining: listeners closed, %d connection(s) open, deadline in %.0f s",
                 len(live_client_ids(self._master)), grace)
        while loop.time() < deadline and not (hurry is not None and hurry.is_set()):
            live = live_client_ids(self._master)
            if not live:
                return 0
            cut_clients(self._master, self.lifecycle.idle_clients(live, idle_after), "idle during shutdown")
            await asyncio.sleep(0.1)
        left = live_client_ids(self._master)
        cut = cut_clients(self._master, left, "shutdown deadline")
        if cut:
            log.warning("drain deadline reached: cut %d connection(s) still open", cut)
        await asyncio.sleep(0.05)  # let the cancelled handlers run their clean-up hooks
        return cut

    async def reload(self) -> bool:
        """SIGHUP: applies what can change live; an invalid file is refused and the running config stays.
        Returns True if a new config came into force."""
        from . import config as config_mod

        try:
            fresh = await asyncio.to_thread(config_mod.load, self.config.source)
        except config_mod.ConfigInvalid as err:
            log.error("reload refused, the running config stays in force: %s", "; ".join(err.problems))
            self.telemetry.count("ztgate_config_reload_rejected_total")
            return False
        merged, needs_restart = live_config(self.config, fresh)
        for what in needs_restart:
            log.warning("reload: %s changed; this needs a restart (still running with the previous value)", what)
        old = self.config
        self.config = merged
        self._routes = {r.name: r for r in merged.routes}
        self.sessions.cfg, self.sessions.store_cfg = merged.session, merged.store
        if merged.session.token_ttl != old.session.token_ttl:
            self.tokens = SessionTokens(self.keyring, ISSUER, ttl=merged.session.token_ttl)
        if merged.telemetry.log_level != old.telemetry.log_level:
            logging.getLogger().setLevel(merged.telemetry.log_level.upper())
        self.policies.interval = merged.policies.reload_interval
        if merged.policies.dir != old.policies.dir:
            from .policy_watch import DEFAULTS

            self.policies.directory = Path(merged.policies.dir) if merged.policies.dir else DEFAULTS
        await self.policies.check_now()
        try:
            if merged.identity.directory != old.identity.directory:
                self.directory = Directory.load(merged.identity.directory) if merged.identity.directory else None
            elif self.directory is not None:
                self.directory = self.directory.reload_if_changed()
        except Exception as exc:  # a broken users file must not take the running directory down with it
            log.error("reload: the user directory could not be loaded, the previous one stays: %s", exc)
        _warn_if_metadata_stale(merged)
        self.telemetry.count("ztgate_config_reloads_total")
        log.info("config reloaded from %s (routes: %s)", merged.source, ", ".join(r.name for r in merged.routes))
        return True


def _warn_if_metadata_stale(config: Config) -> None:
    # still used (it is what the admin imported), but models revoked since it was due are still accepted
    if config.webauthn.stale_metadata(time.strftime("%Y-%m-%d", time.gmtime())):
        log.warning("webauthn.attestation_mds was due for replacement on %s: import the current FIDO Metadata "
                    "Service BLOB (ztgate webauthn mds-import) and reload", config.webauthn.mds_next_update)


def live_config(running: Config, fresh: Config) -> tuple[Config, list[str]]:
    """The config to run with after a reload, and what changed that only a restart applies. Listeners, the
    store's address, keys, state, OIDC providers, security events and the instance name stay as they run."""
    needs_restart = [name for name, old, new in (
        ("listeners", running.listeners, fresh.listeners),
        ("store.url", running.store.url, fresh.store.url),
        ("store.prefix", running.store.prefix, fresh.store.prefix),
        ("keys", running.keys, fresh.keys),
        ("state_dir", running.state_dir, fresh.state_dir),
        ("instance", running.instance, fresh.instance),
        ("identity.oidc", running.identity.oidc, fresh.identity.oidc),
        ("events", running.events, fresh.events),
        ("telemetry (other than log_level)", dataclasses.replace(running.telemetry, log_level=""),
         dataclasses.replace(fresh.telemetry, log_level="")),
        ("vnc route listeners", _tcp_listeners(running), _tcp_listeners(fresh)),
    ) if old != new]
    merged = dataclasses.replace(
        fresh, listeners=running.listeners, keys=running.keys, state_dir=running.state_dir,
        instance=running.instance, events=running.events,
        store=dataclasses.replace(fresh.store, url=running.store.url, prefix=running.store.prefix),
        identity=dataclasses.replace(fresh.identity, oidc=running.identity.oidc),
        telemetry=dataclasses.replace(running.telemetry, log_level=fresh.telemetry.log_level))
    return merged, needs_restart


def _tcp_listeners(config: Config) -> list[tuple[str, Any, Any]]:
    return sorted((r.name, r.listen, r.upstream) for r in config.routes if r.kind == "vnc")


def state_path(config: Config, *parts: str) -> Path:
    p = Path(config.state_dir, *parts)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def ensure_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path
