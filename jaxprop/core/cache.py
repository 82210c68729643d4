"""Remembering what is built from models, losses and optimizers (programs, shapes, sizes)."""

from __future__ import annotations

import functools


def remember(maxsize: int):
    """``functools.lru_cache(maxsize)`` for functions that build programs from models, losses and
    optimizers: a call whose arguments are unhashable (a model or optimizer holding arrays, a
    dict) is not remembered and simply runs. Keyword arguments count as ``lru_cache`` counts
    them; ``cache_clear`` and ``cache_info`` are ``lru_cache``'s."""
    def wrap(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            try:
                hash((args, tuple(kwargs.items())))
            except TypeError:
                return fn(*args, **kwargs)
            return cached(*args, **kwargs)

        call.cache_clear = cached.cache_clear
        call.cache_info = cached.cache_info
        return call

    return wrap
