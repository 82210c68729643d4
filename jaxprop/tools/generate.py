"""Sampling from a sequence model: ``generate`` extends a prompt one token at a time.

Any model that maps int tokens ``(n, T)`` to logits ``(n, T, V)`` and is causal (the logits
at position ``t`` depend on tokens ``0..t`` only: a GPT) works. The model always sees a window
of ``context`` positions: the prompt (its last ``context`` tokens) at the start of the window,
the rest filled with token 0 and never read; each step samples the token after the last one
filled, writes it into the next position and, once the window is full, slides it one position
to the left. Causality makes the unused positions harmless, so the result equals running the
model on the exact sequence so far. Every step is the same compiled program (one ``lax.scan``
over the steps, compiled once per model, window, batch and token count). Without a cache a
step costs one forward pass over the window. With ``cache=True`` (a KV cache: every layer
``positionwise`` or with its own ``decode``, e.g. a ``jp.gpt``) the prompt runs through once,
position by position, and each new token costs one position's pass (attention reads the keys
and values kept for the positions before it) until the window is full; a full window slides,
which moves every position, so from then on each step is a whole forward pass again.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxprop.core.cache import remember
from jaxprop.core.layers import decoder
from jaxprop.core.validate import check_int, is_number


def generate(model, params, prompt_ids, tokens: int, *, temperature: float = 1.0, key=None,
             context: int, state=None, cache: bool = False):
    """``tokens`` new tokens after ``prompt_ids``, sampled from ``model``, one per step.

    ``prompt_ids: (P,)`` or ``(n, P)`` int -> ``(tokens,)`` or ``(n, tokens)`` int32: the new
    tokens only (the prompt is not repeated). A prompt longer than ``context`` is cropped to its
    last ``context`` tokens; so is the sequence as it grows.

    Args:
      model: a causal Layer mapping int tokens ``(n, T)`` to logits ``(n, T, V)``, for any
        ``T <= context``; run in evaluation mode.
      params: its params.
      prompt_ids: the prompt's token ids, each in ``0..V-1``; at least one token.
      tokens: how many tokens to generate (at least one).
      temperature: the logits are divided by it before sampling; ``0``: greedy (the most
        likely token each step, no randomness).
      key: the PRNG key the samples are drawn with (needed unless ``temperature`` is 0).
      context: the window the model sees (at most the longest sequence it accepts, e.g. a
        GPT's ``context``).
      state: the model's state (``None`` for a model without state).
      cache: keep each layer's keys and values (a KV cache, see the module docstring): the
        same tokens, fewer FLOPs; ``ValueError`` for a model with a layer that cannot run one
        position at a time.

    Returns:
      the generated token ids, int32.
    """
    tokens = check_int("tokens", tokens, minimum=1)
    context = check_int("context", context, minimum=1)
    if not (is_number(temperature) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a non-negative number; got {temperature!r}")
    if temperature > 0 and key is None:
        raise ValueError("generate: sampling at a temperature above 0 needs a key "
                         "(jax.random.key(seed)); temperature=0 is greedy")
    if cache and decoder(model) is None:
        raise ValueError(f"generate(cache=True): {model.name} has a layer that cannot run one "
                         "position at a time (neither positionwise nor with decode); use "
                         "cache=False")
    prompt = np.asarray(prompt_ids)
    single = prompt.ndim == 1
    if prompt.ndim not in (1, 2) or not np.issubdtype(prompt.dtype, np.integer):
        raise ValueError(f"prompt_ids must be integer token ids of shape (P,) or (n, P); got "
                         f"{prompt.dtype} of shape {prompt.shape}")
    prompt = prompt[None] if single else prompt
    if prompt.shape[1] == 0 or prompt.shape[0] == 0:
        raise ValueError("prompt_ids is empty: the prompt needs at least one token")
    prompt = prompt[:, -context:]
    vocab = _vocab_size(model, params, state, prompt.shape[0], context)
    if prompt.min() < 0 or prompt.max() >= vocab:
        bad = int(prompt.min()) if prompt.min() < 0 else int(prompt.max())
        raise ValueError(f"prompt_ids holds token {bad}, outside the model's vocabulary "
                         f"0..{vocab - 1}")
    n, filled = prompt.shape
    window = np.zeros((n, context), np.int32)
    window[:, :filled] = prompt
    greedy = temperature == 0
    run = (_cached_sampler if cache else _sampler)(model, tokens, greedy)
    key = jax.random.key(0) if key is None else key
    out = run(params, state, jnp.asarray(window), jnp.int32(filled),
              jnp.float32(1.0 if greedy else temperature), key)
    return out[0] if single else out


def _vocab_size(model, params, state, n, context) -> int:
    """``V`` from the model's output shape on a window (traced, nothing computed); a
    ``ValueError`` when the model does not give ``(n, context, V)`` logits."""
    x = jax.ShapeDtypeStruct((n, context), jnp.int32)
    try:
        y = jax.eval_shape(lambda p, s, x: model.forward(p, s, x, train=False)[0],
                           params, state, x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"generate: the model does not take int tokens of shape "
                         f"{(n, context)}: {str(e).splitlines()[0] if str(e) else e}") from None
    if y.ndim != 3 or y.shape[:2] != (n, context):
        raise ValueError(f"generate needs a model giving logits (n, T, V) for tokens (n, T); "
                         f"for tokens {(n, context)} it gives {tuple(y.shape)}")
    return int(y.shape[-1])


def _next_token(greedy: bool):
    def next_token(logits, temperature, key):
        if greedy:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return jax.random.categorical(key, logits / temperature, axis=-1).astype(jnp.int32)

    return next_token


@remember(maxsize=16)
def _sampler(model, tokens: int, greedy: bool):
    """The jitted ``(params, state, window, filled, temperature, key) -> (n, tokens)``."""
    next_token = _next_token(greedy)

    def run(params, state, window, filled, temperature, key):
        context = window.shape[1]

        def step(carry, step_key):
            window, filled = carry
            logits = model.forward(params, state, window, train=False)[0]
            last = jax.lax.dynamic_index_in_dim(logits, filled - 1, axis=1, keepdims=False)
            token = next_token(last.astype(jnp.float32), temperature, step_key)
            full = filled == context
            window = jnp.where(full, jnp.roll(window, -1, axis=1), window)
            window = jax.lax.dynamic_update_index_in_dim(
                window, token, jnp.where(full, context - 1, filled), axis=1)
            return (window, jnp.minimum(filled + 1, context)), token

        _, out = jax.lax.scan(step, (window, filled), jax.random.split(key, tokens))
        return out.T  # (tokens, n) -> (n, tokens)

    return jax.jit(run)


@remember(maxsize=16)
def _cached_sampler(model, tokens: int, greedy: bool):
    """:func:`_sampler` with a KV cache: the same ``(params, state, window, filled,
    temperature, key) -> (n, tokens)``, one position's pass per token until the window is
    full."""
    next_token = _next_token(greedy)
    init_cache, decode = decoder(model)

    def run(params, state, window, filled, temperature, key):
        n, context = window.shape

        def at(window, pos, cache):  # the logits after position pos, and the cache
            x = jax.lax.dynamic_slice_in_dim(window, pos, 1, axis=1)
            y, cache = decode(params, state, cache, x, pos)
            return y[:, 0].astype(jnp.float32), cache

        def prefill(pos, carry):
            return at(window, pos, carry[1])

        # the prompt, position by position (it holds at least one token: position 0)
        start = at(window, 0, init_cache(params, n, context))
        logits, cache = jax.lax.fori_loop(1, filled, prefill, start)

        def step(carry, step_key):
            window, filled, cache, logits = carry
            token = next_token(logits, temperature, step_key)

            def cached(cache):  # room left: write the token at `filled`, one position's pass
                w = jax.lax.dynamic_update_index_in_dim(window, token, filled, axis=1)
                return (w, *at(w, filled, cache))

            def slide(cache):  # a full window moves every position: a whole forward pass
                w = jnp.roll(window, -1, axis=1).at[:, -1].set(token)
                y = model.forward(params, state, w, train=False)[0]
                return w, y[:, -1].astype(jnp.float32), cache

            window, logits, cache = jax.lax.cond(filled < context, cached, slide, cache)
            return (window, jnp.minimum(filled + 1, context), cache, logits), token

        _, out = jax.lax.scan(step, (window, filled, cache, logits),
                              jax.random.split(key, tokens))
        return out.T  # (tokens, n) -> (n, tokens)

    return jax.jit(run)
