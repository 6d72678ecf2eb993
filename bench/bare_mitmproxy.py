"""Bare mitmproxy in reverse mode, embedded exactly as ztgate embeds it (the same core addons and options) but
with no ztgate addon: the baseline `ztgate bench proxy` compares against.

    python -m bench.bare_mitmproxy UPSTREAM_PORT LISTEN_PORT CONFDIR
"""

from __future__ import annotations

import asyncio
import signal
import sys

from mitmproxy import options
from mitmproxy.addons import core, errorcheck, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master


async def serve(upstream_port: int, listen_port: int, confdir: str) -> None:
    opts = options.Options(confdir=confdir)
    master = Master(opts)
    master.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig(),
                      errorcheck.ErrorCheck())
    modes = [f"reverse:http://127.0.0.1:{upstream_port}@127.0.0.1:{listen_port}"]
    # lazy: what gateway.proxy.master.connection_strategy picks for HTTP-only listeners (not imported: the
    # baseline loads nothing of ztgate); for bare mitmproxy eager and lazy cost the same, one upstream
    # connection per client connection
    opts.update(mode=modes, keep_host_header=True, stream_large_bodies="1m", connection_strategy="lazy",
                websocket=True, http2=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    await master.run()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
