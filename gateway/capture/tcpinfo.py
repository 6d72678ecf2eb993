"""The kernel's RTT estimate of a client's TCP path (Linux TCP_INFO), as NET events.

TLS is done in user space, so the transport's socket is the raw TCP socket even for TLS clients.
"""

from __future__ import annotations

import socket
import struct

import numpy as np

from scoring.events import Kind, Source, make_batch

# struct tcp_info: 8 bytes of u8 fields, then u32s; tcpi_rtt and tcpi_rttvar (microseconds) at offsets 68 and 72
_RTT_OFFSET = 68
_INFO_LENGTH = 104
_TCP_INFO = getattr(socket, "TCP_INFO", None)


def rtt(sock) -> tuple[float, float] | None:
    """(smoothed RTT, RTT variance) in ms for a connected TCP socket; None where TCP_INFO is unavailable."""
    if _TCP_INFO is None or sock is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _INFO_LENGTH)
    except (OSError, AttributeError, TypeError):
        return None
    if len(info) < _RTT_OFFSET + 8:
        return None
    rtt_us, rttvar_us = struct.unpack_from("=II", info, _RTT_OFFSET)
    return rtt_us / 1000.0, rttvar_us / 1000.0


def net_event(rtt_ms: float, rttvar_ms: float, t_arr_ms: float) -> np.ndarray:
    """A one-event NET batch: RTT in `value`, its variance in `y` (both ms), measured by the gateway itself."""
    return make_batch(t_arr_ms, t_arr_ms, Kind.NET, source=Source.GATEWAY, y=rttvar_ms, value=rtt_ms)
