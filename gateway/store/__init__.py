"""Where sessions, profiles and revocations live: memory (one process) or Redis (many processes as one)."""

from .base import STATE_RANK, SessionRecord, SessionState, SessionStore, StoreUnavailable

__all__ = ["STATE_RANK", "SessionRecord", "SessionState", "SessionStore", "StoreUnavailable", "open_store"]


def open_store(url: str, *, prefix: str = "ztgate:") -> SessionStore:
    # the backends import lazily: a memory-store process never loads the Redis client
    if url.startswith("memory://"):
        from .memory import MemoryStore

        return MemoryStore()
    from .redis import RedisStore

    return RedisStore(url, prefix=prefix)
