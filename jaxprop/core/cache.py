"""Remembering what is built from models, losses and optimizers (programs, shapes, sizes)."""

from __future__ import annotations

import functools


def remember(maxsize: int):
    """``functools.lru_cache(maxsize)`` for functions that build programs from models, losses and
    optimizers: a call whose arguments are unhashable (a model or optimizer holding arrays, a
    dict) is not remembered and simply runs."""
    def wrap(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def call(*args):
            try:
                hash(args)
            except TypeError:
                return fn(*args)
            return cached(*args)

        call.cache_clear = cached.cache_clear
        return call

    return wrap
