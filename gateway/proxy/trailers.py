"""HTTP/1 trailer fields are discarded on the way in, instead of crashing mitmproxy's connection handler.

mitmproxy 12.2 reads chunked bodies with h11's ChunkedReader and raises NotImplementedError when the last chunk
carries trailer fields (`_http1.Http1Connection.read_body`): the request is never answered, the connection stays
open until the client gives up, and about 35 lines of traceback are logged at ERROR. Any client can send one, signed
in or not, so that is a log flood and a way to hold connections.

RFC 9110 6.5.1 lets a recipient discard trailer fields, and ztgate forwards none anyway (it drops `TE` and
`Trailer` as hop-by-hop), so the reader mitmproxy uses is swapped for one that reads the trailer section as before
and hands on an end of message without it. Only the name in mitmproxy's module is replaced (h11 itself is
untouched), once per process. Checked against mitmproxy 12.2.3: re-check `read_body` when upgrading; once mitmproxy
implements trailers this module should go.
"""

from __future__ import annotations

import h11
from h11._readers import ChunkedReader
from mitmproxy.proxy.layers.http import _http1


class TrailerDiscardingChunkedReader(ChunkedReader):
    def __call__(self, buf):  # type: ignore[no-untyped-def]
        event = super().__call__(buf)
        if isinstance(event, h11.EndOfMessage) and event.headers:
            return h11.EndOfMessage()
        return event


def discard_trailers() -> None:
    """Idempotent: every Master of the process shares mitmproxy's module."""
    if _http1.ChunkedReader is ChunkedReader:
        _http1.ChunkedReader = TrailerDiscardingChunkedReader
