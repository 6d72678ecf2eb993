"""Syslog sink: RFC 5424 messages over UDP (one datagram each) or TCP (RFC 6587 octet counting).

The message is the OCSF JSON, or, with `cef: true`, an ArcSight CEF line. Over UDP "delivered" means "sent":
the protocol has no acknowledgement; use TCP where losing a datagram matters.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime, timezone

from ..config import SyslogSinkConfig
from ..outbox import Record
from .base import DeliveryError, event_body

# OCSF severity_id -> syslog severity (RFC 5424 table 2)
SYSLOG_SEVERITY = {0: 6, 1: 6, 2: 5, 3: 4, 4: 3, 5: 2, 6: 1}
# OCSF severity_id -> CEF severity 0-10
CEF_SEVERITY = {0: 0, 1: 1, 2: 3, 3: 5, 4: 8, 5: 10, 6: 10}
SD_ID = "ztgate@32473"  # 32473: the IANA enterprise number reserved for examples (RFC 5612)


def _sd_escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _cef_header(v: str) -> str:
    return v.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _cef_ext(v: str) -> str:
    return v.replace("\\", "\\\\").replace("=", "\\=").replace("\n", "\\n").replace("\r", "\\r")


def cef_line(record: Record, version: str) -> str:
    ev = record.event
    meta = ev.get("metadata") or {}
    ztg = (ev.get("unmapped") or {}).get("ztgate") or {}
    sig = f"{ev.get('class_uid')}:{ev.get('disposition_id', ev.get('activity_id'))}"
    name = (ev.get("finding_info") or {}).get("title") or ev.get("type_name") or "ztgate event"
    ext: dict[str, str] = {
        "rt": str(ev.get("time", "")),
        "externalId": record.id,
        "act": str(ev.get("disposition") or ev.get("activity_name") or ""),
        "msg": str(ev.get("message", "")),
        "cs1Label": "correlationUid", "cs1": str(meta.get("correlation_uid", "")),
        "cs2Label": "sessionId", "cs2": str(record.sid or ""),
        "dvchost": str(ztg.get("instance", "")),
    }
    user = ev.get("user") or (((ev.get("evidences") or [{}])[0].get("actor") or {}).get("user")) or {}
    if user.get("name"):
        ext["suser"] = str(user["name"])
    src = ev.get("src_endpoint") or ((ev.get("evidences") or [{}])[0].get("src_endpoint")) or {}
    if src.get("ip"):
        ext["src"] = str(src["ip"])
    if "risk_score" in ev:
        ext["cn1Label"], ext["cn1"] = "riskScore", str(ev["risk_score"])
    header = "|".join(_cef_header(x) for x in ("ztgate", "ztgate", version, sig, str(name)))
    return f"CEF:0|{header}|{CEF_SEVERITY.get(int(ev.get('severity_id', 0)), 0)}|" + \
        " ".join(f"{k}={_cef_ext(v)}" for k, v in ext.items())


def rfc5424(record: Record, cfg: SyslogSinkConfig, hostname: str, version: str) -> bytes:
    ev = record.event
    pri = cfg.facility * 8 + SYSLOG_SEVERITY.get(int(ev.get("severity_id", 0)), 6)
    ts = datetime.fromtimestamp(int(ev.get("time", record.enqueued_ms)) / 1000, tz=timezone.utc)
    stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
    msgid = f"ocsf-{ev.get('class_uid', 0)}"
    sd = f'[{SD_ID} id="{_sd_escape(record.id)}" class_uid="{ev.get("class_uid", "")}" ' \
         f'correlation_uid="{_sd_escape(str((ev.get("metadata") or {}).get("correlation_uid", "")))}"]'
    if cfg.cef:
        msg = cef_line(record, version).encode()
    else:
        msg = b"\xef\xbb\xbf" + event_body(record)  # BOM: the MSG is UTF-8 (RFC 5424 section 6.4)
    return f"<{pri}>1 {stamp} {hostname[:255] or '-'} {cfg.app_name[:48]} - {msgid} {sd} ".encode() + msg


class SyslogSink:
    type = "syslog"

    def __init__(self, cfg: SyslogSinkConfig, *, version: str):
        self.cfg = cfg
        self.name = cfg.name
        self.version = version
        self.hostname = socket.gethostname()
        self._writer: asyncio.StreamWriter | None = None
        self._udp: asyncio.DatagramTransport | None = None

    async def _send_tcp(self, msg: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            _, self._writer = await asyncio.wait_for(asyncio.open_connection(self.cfg.host, self.cfg.port),
                                                     self.cfg.timeout)
        self._writer.write(str(len(msg)).encode() + b" " + msg)
        await asyncio.wait_for(self._writer.drain(), self.cfg.timeout)

    async def _send_udp(self, msg: bytes) -> None:
        if self._udp is None or self._udp.is_closing():
            loop = asyncio.get_running_loop()
            self._udp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                               remote_addr=(self.cfg.host, self.cfg.port))
        self._udp.sendto(msg)

    async def deliver(self, record: Record) -> None:
        msg = rfc5424(record, self.cfg, self.hostname, self.version)
        try:
            if self.cfg.transport == "tcp":
                await self._send_tcp(msg)
            else:
                await self._send_udp(msg)
        except (OSError, asyncio.TimeoutError) as err:
            await self.close()
            raise DeliveryError(f"syslog {self.cfg.transport}://{self.cfg.host}:{self.cfg.port}: "
                                f"{type(err).__name__}: {err}") from None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
