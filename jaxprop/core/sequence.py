"""Sequence layers, each backward pass written out by hand: token and position embeddings and
causal multi-head self-attention; and :func:`gpt`, a decoder-only transformer made of them.

A sequence example is ``(T, D)``: ``T`` positions of ``D`` features (integer ids ``(T,)``
before the :func:`Embedding`). Dense, LayerNorm, Dropout, Gelu and Residual act on the last
axis, so they work on ``(..., T, D)`` unchanged.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from jaxprop.core.checks import require_dtype
from jaxprop.core.layers import Dense, Gelu, Layer, get_initializer
from jaxprop.core.network import Model, Repeat, Residual, serial
from jaxprop.core.norm import LayerNorm
from jaxprop.core.validate import is_int, is_number

# GPT-2's initialisation of its embedding tables.
EMBEDDING_INIT = jax.nn.initializers.normal(stddev=0.02)


def _positive(value, what):
    if not is_int(value) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return int(value)


def _table_init(init):
    return get_initializer(EMBEDDING_INIT if init is None else init)


def Embedding(vocab_size: int, features: int, *, init: str | Callable | None = None,
              dtype=jnp.float32) -> Layer:
    """A table lookup: integer token ids ``(..., *in_shape)`` -> rows ``(..., *in_shape, F)``.

    ``y = table[ids]``; params ``{"table": (vocab_size, features)}`` (N(0, 0.02^2) by default).
    Backward: each ``dy`` row is added into the row of its id, ``dtable = zeros.at[ids].add(dy)``;
    the ids are not differentiable, so ``dx`` is ``None``. The layer says so with
    ``integer_inputs=vocab_size``: data checks then want integer ids in ``0..vocab_size-1``.

    Args:
      vocab_size: the number of distinct ids.
      features: ``F``, the width of each row.
      init: the table's initializer (a name from ``INITIALIZERS`` or a function); default
        N(0, 0.02^2).
      dtype: the table's dtype.

    Returns:
      the :class:`Layer`.
    """
    vocab = _positive(vocab_size, "Embedding: vocab_size")
    features = _positive(features, "Embedding: features")
    init_fn = _table_init(init)
    name = f"Embedding({vocab}, {features})"

    def init_(key, in_shape):
        require_dtype(dtype, name)
        return {"table": init_fn(key, (vocab, features), dtype)}, (), tuple(in_shape) + (
            features,)

    def forward(params, state, x, *, key=None, train=True):
        del key, train
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(f"{name} takes integer token ids 0..{vocab - 1}, got an input of "
                             f"dtype {jnp.dtype(x.dtype).name}")
        return jnp.take(params["table"], x, axis=0), x, state

    def backward(params, ids, dy):
        # y[i] = table[ids[i]]  =>  dtable[v] = sum of dy[i] over the positions i with ids[i] == v
        table = params["table"]
        dtable = jnp.zeros_like(table).at[ids.reshape(-1)].add(dy.reshape(-1, table.shape[1]))
        return {"table": dtable}, None  # integer ids: no dx

    return Layer(init_, forward, backward, name, spec=f"embed({vocab},{features})",
                 integer_inputs=vocab, positionwise=True)


def PositionalEmbedding(max_len: int, *, init: str | Callable | None = None,
                        dtype=jnp.float32) -> Layer:
    """A learned position vector added to each position: ``(..., T, D) -> (..., T, D)``.

    ``y[t] = x[t] + table[t]`` with params ``{"table": (max_len, D)}`` (N(0, 0.02^2) by
    default); ``T <= max_len`` (``ValueError`` at init and forward otherwise). Backward:
    ``dx = dy``; ``dtable[t] = sum over the batch of dy[t]`` for ``t < T``, zero beyond.

    Args:
      max_len: the longest sequence the layer takes.
      init: the table's initializer; default N(0, 0.02^2).
      dtype: the table's dtype.

    Returns:
      the :class:`Layer`.
    """
    max_len = _positive(max_len, "PositionalEmbedding: max_len")
    init_fn = _table_init(init)
    name = f"PositionalEmbedding({max_len})"

    def check_length(shape):
        if len(shape) < 2:
            raise ValueError(f"{name} takes sequences (..., T, D); got shape {tuple(shape)}")
        if shape[-2] > max_len:
            raise ValueError(f"{name}: a sequence of {shape[-2]} positions is longer than "
                             f"max_len={max_len}")

    def init_(key, in_shape):
        in_shape = tuple(in_shape)
        check_length(in_shape)
        require_dtype(dtype, name)
        return {"table": init_fn(key, (max_len, in_shape[-1]), dtype)}, (), in_shape

    def forward(params, state, x, *, key=None, train=True):
        del key, train
        check_length(x.shape)
        table = params["table"]
        if x.shape[-1] != table.shape[1]:
            raise ValueError(f"{name}: input has {x.shape[-1]} features, the table "
                             f"{table.shape[1]}")
        return x + table[:x.shape[-2]], None, state

    def backward(params, residuals, dy):
        # y = x + table[:T]  =>  dx = dy;  dtable[:T] = dy summed over the batch axes
        del residuals  # T is dy's
        d = jnp.sum(dy.reshape(-1, *dy.shape[-2:]), axis=0)
        dtable = jnp.pad(d, ((0, params["table"].shape[0] - d.shape[0]), (0, 0)))
        return {"table": dtable}, dy

    def decode(params, state, cache, x, pos):
        # one position: y = x + table[pos]
        return x + jax.lax.dynamic_slice_in_dim(params["table"], pos, 1), cache

    return Layer(init_, forward, backward, name, spec=f"posembed({max_len})",
                 init_cache=lambda params, n, context: (), decode=decode)


def CausalSelfAttention(num_heads: int, *, head_dim: int | None = None, dropout: float = 0.0,
                        use_bias: bool = True, W_init: str | Callable = "glorot",
                        dtype=jnp.float32) -> Layer:
    """Multi-head causal self-attention: ``(..., T, D) -> (..., T, D)``.

    With ``H`` heads of ``d`` features (``d = D / H`` by default)::

        q, k, v = split(x @ W_qkv + b_qkv)          # each (..., H, T, d)
        s = q k^T / sqrt(d),  s[i, j] = -inf for j > i   (position i sees 0..i only)
        p = softmax(s)                              # (..., H, T, T)
        o = (p * m) v                               # m: dropout's keep / (1 - rate), train only
        y = merge(o) @ W_o + b_o

    Backward, from the output down: ``dW_o = merge(o)^T dy``, ``do = dy W_o^T``;
    ``dv = (p m)^T do``, ``dp = (do v^T) m``; softmax's JVP from its output
    ``ds = p (dp - sum_j(dp p)) / sqrt(d)`` (masked entries have ``p = 0``, so ``ds = 0``);
    ``dq = ds k``, ``dk = ds^T q``; ``dW_qkv = x^T dqkv``, ``dx = dqkv W_qkv^T``.
    Params ``{"W_qkv": (D, 3Hd), "W_o": (Hd, D)}`` plus ``"b_qkv"``, ``"b_o"`` with
    ``use_bias``. Residuals per example: ``x`` (``T D``), ``q, k, v, o`` (``4 T H d``) and the
    probabilities ``p`` (``H T^2``; with dropout also its scale, another ``H T^2``).

    Args:
      num_heads: ``H``.
      head_dim: ``d``; default ``D // H`` (``D`` must then be a multiple of ``H``).
      dropout: the rate at which attention probabilities are dropped in training (the layer's
        ``key``); 0 for none.
      use_bias: give both projections biases.
      W_init: the projections' initializer.
      dtype: the params' dtype.

    Returns:
      the :class:`Layer`.
    """
    heads = _positive(num_heads, "CausalSelfAttention: num_heads")
    if head_dim is not None:
        head_dim = _positive(head_dim, "CausalSelfAttention: head_dim")
    if not is_number(dropout) or not 0 <= dropout < 1:
        raise ValueError(f"CausalSelfAttention: dropout must be a number in [0, 1), "
                         f"got {dropout!r}")
    rate = float(dropout)
    w_init = get_initializer(W_init)
    name = f"CausalSelfAttention({heads})"

    def init(key, in_shape):
        in_shape = tuple(in_shape)
        if len(in_shape) != 2:
            raise ValueError(f"{name} takes sequences (T, D) per example; got {in_shape}")
        D = in_shape[1]
        if head_dim is None and D % heads:
            raise ValueError(f"{name}: {D} features do not split into {heads} heads; give "
                             "head_dim")
        hd = heads * (head_dim or D // heads)
        require_dtype(dtype, name)
        k1, k2 = jax.random.split(key)
        params = {"W_qkv": w_init(k1, (D, 3 * hd), dtype), "W_o": w_init(k2, (hd, D), dtype)}
        if use_bias:
            params.update(b_qkv=jnp.zeros((3 * hd,), dtype), b_o=jnp.zeros((D,), dtype))
        return params, (), in_shape

    def split_heads(params, x):  # (..., T, D) -> q, k, v, each (..., H, T, d)
        d = params["W_o"].shape[0] // heads
        qkv = x @ params["W_qkv"] + (params["b_qkv"] if use_bias else 0)
        qkv = qkv.reshape(*x.shape[:-1], 3, heads, d)  # (..., T, 3, H, d)
        return tuple(jnp.swapaxes(qkv[..., i, :, :], -3, -2) for i in range(3))

    def merge_heads(o):  # (..., H, T, d) -> (..., T, H d)
        *lead, H, T, d = o.shape
        return jnp.moveaxis(o, -3, -2).reshape(*lead, T, H * d)

    def forward(params, state, x, *, key=None, train=True):
        W_qkv, W_o = params["W_qkv"], params["W_o"]
        if x.ndim < 2 or x.shape[-1] != W_qkv.shape[0]:
            raise ValueError(f"{name}: input has shape {tuple(x.shape)}, expected "
                             f"(..., T, {W_qkv.shape[0]})")
        T, d = x.shape[-2], W_o.shape[0] // heads
        q, k, v = split_heads(params, x)  # (..., H, T, d)
        scale = 1 / math.sqrt(d)
        s = jnp.einsum("...id,...jd->...ij", q, k) * scale
        causal = jnp.tril(jnp.ones((T, T), bool))
        p = jax.nn.softmax(jnp.where(causal, s, -jnp.inf), axis=-1)
        keep = None
        if train and rate > 0:
            if key is None:
                raise ValueError(f"{name} with dropout needs a PRNG key in training: pass "
                                 "key=..., or train=False to evaluate")
            keep = jax.random.bernoulli(key, 1 - rate, p.shape).astype(p.dtype) / (1 - rate)
        o = jnp.einsum("...ij,...jd->...id", p if keep is None else p * keep, v)
        o = merge_heads(o)  # (..., T, H d)
        y = o @ W_o + (params["b_o"] if use_bias else 0)
        return y, (x, q, k, v, p, keep, o), state

    def backward(params, residuals, dy):
        x, q, k, v, p, keep, o = residuals
        W_qkv, W_o = params["W_qkv"], params["W_o"]
        d = q.shape[-1]
        lead = x.shape[:-1]  # (..., T)
        flat = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
        grads = {"W_o": flat(o).T @ flat(dy)}
        do = jnp.moveaxis((dy @ W_o.T).reshape(*lead, heads, d), -2, -3)  # (..., H, T, d)
        pk = p if keep is None else p * keep
        dv = jnp.einsum("...ij,...id->...jd", pk, do)
        dp = jnp.einsum("...id,...jd->...ij", do, v)
        if keep is not None:
            dp = dp * keep
        ds = p * (dp - jnp.sum(dp * p, axis=-1, keepdims=True)) / math.sqrt(d)
        dq = jnp.einsum("...ij,...jd->...id", ds, k)
        dk = jnp.einsum("...ij,...id->...jd", ds, q)
        dqkv = jnp.stack([jnp.swapaxes(g, -3, -2) for g in (dq, dk, dv)], axis=-3)  # T,3,H,d
        dqkv = dqkv.reshape(*lead, 3 * heads * d)
        grads["W_qkv"] = flat(x).T @ flat(dqkv)
        if use_bias:
            grads.update(b_qkv=jnp.sum(flat(dqkv), axis=0), b_o=jnp.sum(flat(dy), axis=0))
        return grads, dqkv @ W_qkv.T

    def init_cache(params, n, context):
        # the keys and values of every position so far: k, v (n, H, context, d)
        d = params["W_o"].shape[0] // heads
        empty = jnp.zeros((n, heads, context, d), params["W_o"].dtype)
        return empty, empty

    def decode(params, state, cache, x, pos):
        # position pos alone (n, 1, D): its q, k, v; k, v written into the cache at pos; q
        # attends to the cached positions 0..pos (evaluation: no dropout)
        q, k, v = split_heads(params, x)  # (n, H, 1, d)
        d = q.shape[-1]
        keys, values = (jax.lax.dynamic_update_slice_in_dim(c, a, pos, axis=2)
                        for c, a in zip(cache, (k, v)))
        s = jnp.einsum("nhid,nhjd->nhij", q, keys) / math.sqrt(d)  # (n, H, 1, context)
        seen = jnp.arange(keys.shape[2]) <= pos
        p = jax.nn.softmax(jnp.where(seen, s, -jnp.inf), axis=-1)
        o = merge_heads(jnp.einsum("nhij,nhjd->nhid", p, values))  # (n, 1, H d)
        return o @ params["W_o"] + (params["b_o"] if use_bias else 0), (keys, values)

    args = [str(heads)] + ([] if head_dim is None else [f"head_dim={head_dim}"]) + (
        [] if rate == 0 else [f"dropout={rate!r}"]) + ([] if use_bias else ["bias=0"])
    return Layer(init, forward, backward, name, spec=f"attention({','.join(args)})",
                 init_cache=init_cache, decode=decode)


def gpt(vocab: int, *, blocks: int, features: int, heads: int, context: int,
        dtype=jnp.float32) -> Model:
    """A decoder-only transformer (GPT-2's layout) on token ids ``(..., context)``.

    ``embed(vocab,F)-posembed(context)-repeat(blocks, residual(layernorm-attention(heads))-
    residual(layernorm-dense(4F)-gelu_tanh-dense(F)))-layernorm-dense(vocab)``: pre-LN blocks,
    logits ``(..., context, vocab)`` for ``sparse_softmax_cross_entropy`` against the next ids.

    Args:
      vocab: the number of token ids.
      blocks: transformer blocks.
      features: ``F``, the width of every position.
      heads: attention heads (``F`` a multiple of it).
      context: the sequence length ``T`` (the model's ``in_shape`` is ``(context,)``).
      dtype: the params' dtype.

    Returns:
      the :class:`~jaxprop.Model`; its ``spec`` rebuilds it with ``jp.parse_model``.
    """
    vocab, blocks = _positive(vocab, "gpt: vocab"), _positive(blocks, "gpt: blocks")
    F, heads = _positive(features, "gpt: features"), _positive(heads, "gpt: heads")
    context = _positive(context, "gpt: context")
    if F % heads:
        raise ValueError(f"gpt: features={F} is not a multiple of heads={heads}")
    block = serial(
        Residual(serial(LayerNorm(dtype=dtype), CausalSelfAttention(heads, dtype=dtype))),
        Residual(serial(LayerNorm(dtype=dtype), Dense(4 * F, dtype=dtype), Gelu(approximate=True),
                        Dense(F, dtype=dtype))))
    return serial(Embedding(vocab, F, dtype=dtype), PositionalEmbedding(context, dtype=dtype),
                  Repeat(blocks, block), LayerNorm(dtype=dtype), Dense(vocab, dtype=dtype),
                  in_shape=(context,))
