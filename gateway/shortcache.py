"""An LRU cache for functions of request text that keeps short inputs only.

Request paths, User-Agents and header names repeat within one application, so caching them saves work per request;
but the client chooses them, and ever-new long ones would each hold up to maxsize times their length. Inputs longer
than `longest` are computed each time and never kept."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", str, bytes)
R = TypeVar("R")


def short_input_cache(maxsize: int, longest: int) -> Callable[[Callable[[T], R]], Callable[[T], R]]:
    def decorate(func: Callable[[T], R]) -> Callable[[T], R]:
        cached = functools.lru_cache(maxsize=maxsize)(func)

        @functools.wraps(func)
        def call(value: T) -> R:
            return cached(value) if len(value) <= longest else func(value)

        call.cache_info = cached.cache_info  # type: ignore[attr-defined]
        call.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return call

    return decorate
