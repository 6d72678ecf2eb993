"""What the addon learned about a flow when it admitted it, for the later hooks (and the capture hub)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Route


@dataclass(slots=True)
class FlowState:
    sid: str
    route: Route
    refresh_cookie: str | None = None
    capture: Any = None  # a gateway.capture parser for remote-desktop / terminal streams
    extra: dict[str, Any] = field(default_factory=dict)
    secure: bool = False  # the browser used TLS (to the gateway, or to a trusted proxy in front of it)
    via_proxy: bool = False  # the connection ends at a trusted proxy: its TCP RTT is not the client's
