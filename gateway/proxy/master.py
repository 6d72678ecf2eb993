"""Embedding mitmproxy: its options, its core addons and ours, its listeners; and a clean shutdown."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mitmproxy import ctx, options
from OpenSSL import SSL
from mitmproxy.addons import core, errorcheck, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master
from mitmproxy.proxy import mode_servers

from .addon import ZtgateAddon
from .dispatch import HookDispatch
from .trailers import discard_trailers
from .websocket_limits import gather_in_linear_time

if TYPE_CHECKING:
    from ..runtime import Gateway

log = logging.getLogger("ztgate.proxy")


def listener_modes(gw: "Gateway") -> list[str]:
    cfg = gw.config
    modes = []
    for listener in cfg.listeners:
        # The reverse target of an HTTP listener is only the fallback: the addon routes every request itself.
        # Pointing it at the control plane keeps it on this machine and always up.
        modes.append(f"reverse:http://127.0.0.1:{gw.control_port}@{listener.address.host}:{listener.address.port}")
    for route in cfg.routes:
        if route.kind == "vnc" and route.listen is not None:
            up = route.upstream
            modes.append(f"reverse:tcp://{up.host}:{up.port}@{route.listen.host}:{route.listen.port}")
    return modes


def connection_strategy(modes: list[str]) -> str:
    """`eager` when there is a raw TCP listener: lazy deadlocks server-speaks-first protocols (VNC). Otherwise
    `lazy`: mitmproxy's option is global, and eager makes every HTTP client connection also open one to the
    HTTP listeners' reverse target (the control plane), which the addon's routing then never uses (measured
    on the 2-core dev machine: about 0.9 ms more CPU per client connection than bare mitmproxy)."""
    return "eager" if any(m.startswith("reverse:tcp:") for m in modes) else "lazy"


def _certs(gw: "Gateway") -> list[str]:
    out = []
    for i, listener in enumerate(gw.config.listeners):
        if listener.tls is None:
            continue
        combined = Path(gw.config.state_dir, "tls", f"listener-{i}.pem")
        combined.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # written aside and renamed: worker processes sharing the state directory never read a half-written file
        partial = combined.with_name(f".{combined.name}.{os.getpid()}")
        partial.write_bytes(Path(listener.tls.cert).read_bytes() + b"\n" + Path(listener.tls.key).read_bytes())
        partial.chmod(0o600)
        os.replace(partial, combined)
        out.append(f"*={combined}")
    return out


class ReverseProxyTlsConfig(tlsconfig.TlsConfig):
    """mitmproxy's TLS handling without its CRL responder, with upstream certificate checks per route.

    TlsConfig answers any request whose path ends in /mitmproxy-<CA serial>.crl itself, for the certificates an
    intercepting proxy mints; ztgate serves configured certificates, and every path of a route belongs to the
    upstream. Without a `request` hook it is also one dispatch less per request.

    mitmproxy's `ssl_insecure` turns upstream verification off for every connection, so one route with
    `ssl_verify: false` (a lab box with a self-signed certificate) would have made every upstream spoofable. It stays
    off; the upstream addresses of such routes (config.py refuses an address that routes disagree on) skip the
    check on their own connections only."""

    request = None  # type: ignore[assignment]

    def __init__(self, unverified: frozenset[tuple[str, int]] = frozenset()) -> None:
        super().__init__()
        self.unverified = unverified

    def tls_start_server(self, tls_start: Any) -> None:
        super().tls_start_server(tls_start)
        address = tls_start.conn.address
        if tls_start.ssl_conn is not None and address is not None and (address[0], address[1]) in self.unverified:
            tls_start.ssl_conn.set_verify(SSL.VERIFY_NONE)


def unverified_upstreams(routes: Any) -> frozenset[tuple[str, int]]:
    return frozenset((r.upstream.host, r.upstream.port) for r in routes if not r.ssl_verify)


def build_master(gw: "Gateway", lifecycle: "Lifecycle | None" = None) -> Master:
    confdir = Path(gw.config.state_dir, "mitmproxy")
    confdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    opts = options.Options(confdir=str(confdir))
    master = Master(opts)
    master.addons = HookDispatch(master)  # before any addon is added: see dispatch.py
    _install_shared_listen()
    discard_trailers()
    gather_in_linear_time()
    # one ztgate addon only: every addon with a hook costs a dispatch of every request's hook, so the Lifecycle
    # bookkeeping is called by ZtgateAddon instead of being an addon of its own
    master.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), ReverseProxyTlsConfig(unverified_upstreams(gw.config.routes)),
                      errorcheck.ErrorCheck(), ZtgateAddon(gw, lifecycle or Lifecycle()))
    modes = listener_modes(gw)
    opts.update(
        mode=modes,
        keep_host_header=True,  # the addon needs the client's Host to route; it rewrites per route
        stream_large_bodies="1m",  # bounded memory for large uploads and downloads
        ssl_insecure=False,  # per route instead: ReverseProxyTlsConfig
        certs=_certs(gw),
        connection_strategy=connection_strategy(modes),
        tcp_timeout=24 * 3600,  # an idle remote-desktop connection is not a dead one
        websocket=True,
        http2=True,
    )
    return master


async def stop_master(master: Master) -> None:
    ps: Any = master.addons.get("proxyserver")
    try:
        await ps.servers.update([])
    except Exception:
        log.exception("closing listeners failed")
    for handler in list(ps.connections.values()):
        for io in list(handler.transports.values()):
            if io.handler is not None:
                io.handler.cancel("shutdown")
    await asyncio.sleep(0)
    master.shutdown()


# ---------------------------------------------------------------------------------------------- workers, drain

_REUSE_PORT_OPTION = "ztgate_reuse_port"


def _install_shared_listen() -> None:
    """Lets several worker processes listen on the same ports (SO_REUSEPORT; the kernel spreads connections).

    mitmproxy binds each TCP listener with a plain `asyncio.start_server(handler, host, port)` inside
    `mode_servers.AsyncioServerInstance.listen` and has no option for SO_REUSEPORT. This wrapper is the only
    reach into mitmproxy's listener creation: it changes nothing unless the `ztgate_reuse_port` option (added by
    Lifecycle.load) is on, and then binds TCP-only modes (reverse:http, reverse:tcp) with reuse_port=True.
    Checked against mitmproxy 12.2.3: re-check `listen` when upgrading. Idempotent; patching a class is global,
    which is why the option, not this patch, decides."""
    original = mode_servers.AsyncioServerInstance.listen
    if getattr(original, "_ztgate_shared", False):
        return

    async def listen(self: Any, host: str, port: int) -> list:
        if not getattr(ctx.options, _REUSE_PORT_OPTION, False) or self.mode.transport_protocol != "tcp":
            return await original(self, host, port)
        if port == 0:
            raise OSError(errno.EINVAL, "workers cannot share port 0: give every listener a fixed port")
        return [await asyncio.start_server(self.handle_stream, host or None, port, reuse_port=True)]

    listen._ztgate_shared = True  # type: ignore[attr-defined]
    mode_servers.AsyncioServerInstance.listen = listen  # type: ignore[method-assign]


class Lifecycle:
    """The proxy's part of running as a worker and of a graceful shutdown: the shared-listener option, which
    client connections are busy (a request in flight, a WebSocket or TCP stream open), and `Connection: close`
    on HTTP/1 responses while draining so that keep-alive clients reconnect elsewhere.

    Its methods have mitmproxy's hook names and signatures, but ZtgateAddon calls them (first, in each of its
    own hooks) rather than mitmproxy: a second addon in the chain costs a dispatch on every hook."""

    def __init__(self, *, reuse_port: bool = False, worker_header: bool = False) -> None:
        self.reuse_port = reuse_port
        self.worker_header = worker_header  # debug/test only: X-Ztgate-Worker: <pid> on every response
        self.draining = False
        self._busy: dict[str, int] = {}
        self._last_active: dict[str, float] = {}

    def load(self, loader: Any) -> None:
        loader.add_option(_REUSE_PORT_OPTION, bool, self.reuse_port,
                          "Bind TCP listeners with SO_REUSEPORT (ztgate run --workers).")

    def client_connected(self, client: Any) -> None:
        self._last_active[client.id] = time.monotonic()

    def client_disconnected(self, client: Any) -> None:
        self._busy.pop(client.id, None)
        self._last_active.pop(client.id, None)

    def requestheaders(self, flow: Any) -> None:
        self._begin(flow.client_conn.id)

    def responseheaders(self, flow: Any) -> None:
        self._mark(flow)

    def response(self, flow: Any) -> None:
        if not flow.response.stream:  # a streamed response's headers went out at responseheaders
            self._mark(flow)
        if flow.response.status_code != 101:  # an upgraded connection stays busy until websocket_end
            self._end(flow.client_conn.id)

    def error(self, flow: Any) -> None:
        if getattr(flow, "websocket", None) is None:
            self._end(flow.client_conn.id)

    def websocket_end(self, flow: Any) -> None:
        self._end(flow.client_conn.id)

    def tcp_start(self, flow: Any) -> None:
        self._begin(flow.client_conn.id)

    def tcp_end(self, flow: Any) -> None:
        self._end(flow.client_conn.id)

    def tcp_error(self, flow: Any) -> None:
        self._end(flow.client_conn.id)

    def idle_clients(self, client_ids: Any, min_idle: float) -> list[str]:
        """Connections with nothing in flight for at least `min_idle` seconds (idle keep-alives)."""
        now = time.monotonic()
        return [cid for cid in client_ids
                if not self._busy.get(cid) and now - self._last_active.get(cid, 0.0) >= min_idle]

    def _mark(self, flow: Any) -> None:
        headers = flow.response.headers
        if self.worker_header:
            headers["x-ztgate-worker"] = str(os.getpid())
        if self.draining and flow.response.status_code != 101 and flow.request.http_version.startswith("HTTP/1"):
            headers["connection"] = "close"

    def _begin(self, client_id: str) -> None:
        self._busy[client_id] = self._busy.get(client_id, 0) + 1
        self._last_active[client_id] = time.monotonic()

    def _end(self, client_id: str) -> None:
        if client_id in self._busy:
            self._busy[client_id] = max(0, self._busy[client_id] - 1)
        self._last_active[client_id] = time.monotonic()


async def close_listeners(master: Master) -> None:
    """Stops accepting: new connections are refused (or go to the other workers); open ones carry on."""
    ps: Any = master.addons.get("proxyserver")
    try:
        await ps.servers.update([])
    except Exception:
        log.exception("closing listeners failed")


def live_client_ids(master: Master) -> list[str]:
    ps: Any = master.addons.get("proxyserver")
    return list(ps.connections)


def cut_clients(master: Master, client_ids: list[str], reason: str) -> int:
    """Cuts client connections the way mitmproxy's own idle timeout does (see proxy/connections.py); a WebSocket
    client sees close code 1006: mitmproxy has no API to send a close frame from outside a hook."""
    ps: Any = master.addons.get("proxyserver")
    cut = 0
    for client_id in client_ids:
        handler = ps.connections.get(client_id)
        io = handler.transports.get(handler.client) if handler is not None else None
        if io is not None and io.handler is not None:
            io.handler.cancel(reason)
            cut += 1
    return cut
