"""Where sessions, profiles and revocations live: memory (one process) or Redis (many processes as one)."""

from .base import SessionRecord, SessionState, SessionStore, StoreUnavailable, open_store

__all__ = ["SessionRecord", "SessionState", "SessionStore", "StoreUnavailable", "open_store"]
