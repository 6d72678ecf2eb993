"""Security events: OCSF findings and logoffs, made durable in an outbox, delivered to every configured sink."""

from .config import EventsConfig
from .service import SecurityEvents

__all__ = ["EventsConfig", "SecurityEvents"]
