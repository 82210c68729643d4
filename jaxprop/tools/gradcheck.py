"""Gradient checking: the hand-written backward pass against ``jax.grad`` and finite differences.

:func:`check_gradients` computes, for every parameter leaf (named by its path, e.g.
``"layer 0 Dense(4) W"``), the hand-written gradient (:func:`jaxprop.value_and_grad`) and two
references:

* **autodiff** -- ``jax.grad`` of the same forward, ``loss.value(model.apply(p, x), t)``, in the
  params' own dtype. This checks the implementation as it runs.
* **finite differences** -- central differences ``(L(p + h e_i) - L(p - h e_i)) / 2h`` in float64
  (params, ``x`` and ``t`` are cast to float64 inside ``jax.enable_x64(True)``), vectorised with
  ``jax.vmap`` over the coordinates ``i`` (in chunks of ``FD_CHUNK``; one compilation). This
  checks the mathematics, so it is compared with the hand-written gradient evaluated in float64
  from the same (cast) params, whatever their dtype. Leaves with more than ``max_fd_coords``
  entries are checked on a random subset of that many coordinates (``LeafCheck.fd_coords <
  LeafCheck.size``; the report and its verdict say so).

Everything runs under ``jax.default_matmul_precision("highest")`` (TF32/bf16 matmuls on GPU/TPU
would otherwise dominate the error).

Error definitions, per leaf, for a hand-written gradient ``g`` and a reference ``r`` (over the
checked coordinates ``i``)::

    abs_err = max_i |g_i - r_i|
    rel_err = max_i |g_i - r_i| / (|r_i| + atol / rtol)
    atol    = rtol * atol_frac * scale        (+ fd_noise for finite differences)
    scale   = max_i |r_i| over the leaf (if that is 0: over the whole gradient; if 0 too: 1)

so ``rel_err <= rtol`` exactly when ``|g_i - r_i| <= rtol * |r_i| + atol`` for every ``i``
(``numpy.allclose(g, r, rtol, atol)``). The small ``atol`` (a fraction of the leaf's own gradient
scale) keeps entries that are zero up to rounding -- sums that cancel -- from failing on noise.
``fd_noise = FD_NOISE_ULPS * eps64 * (1 + |L|) / h`` bounds the rounding error of a central
difference of a float64 loss of size ``|L|``. Defaults (:data:`TOLERANCES`):

=====================  ========  ==========  ==============================================
reference              rtol      atol_frac   notes
=====================  ========  ==========  ==============================================
jax.grad, float32      1e-5      1e-2        atol = 1e-7 * scale
jax.grad, float64      1e-10     1e-2        atol = 1e-12 * scale
finite differences     1e-6      1e-2        h = 1e-6, float64; fd_noise ~ 3.6e-9 (1+|L|)
=====================  ========  ==========  ==============================================

A leaf is ``ok`` when both checks pass; the report is ``ok`` when every leaf is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxprop.core.backprop import loss_and_grad_fn, value_and_grad
from jaxprop.core.checks import validate_data
from jaxprop.core.losses import Loss, get_loss
from jaxprop.core.network import Model

# rtol per reference (and per dtype for jax.grad); atol = rtol * ATOL_FRAC * leaf gradient scale.
TOLERANCES: dict[str, float] = {
    "grad_float32": 1e-5,
    "grad_float64": 1e-10,
    "fd": 1e-6,
}
ATOL_FRAC = 1e-2
FD_EPS = 1e-6
FD_NOISE_ULPS = 16
MAX_FD_COORDS = 256
FD_CHUNK = 128


@dataclass(frozen=True)
class LeafCheck:
    """The check of one parameter leaf. Errors follow the module docstring's definitions."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    grad_abs_err: float
    grad_rel_err: float
    grad_ok: bool
    fd_abs_err: float
    fd_rel_err: float
    fd_ok: bool
    fd_coords: int  # coordinates checked by finite differences (== size unless sampled)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def sampled(self) -> bool:
        return self.fd_coords < self.size

    @property
    def ok(self) -> bool:
        return self.grad_ok and self.fd_ok


@dataclass(frozen=True)
class GradCheckReport:
    """Per-leaf results of :func:`check_gradients`; ``ok`` when every leaf passed."""

    leaves: tuple[LeafCheck, ...]
    dtype: str
    loss_value: float
    grad_rtol: float
    fd_rtol: float
    atol_frac: float
    fd_eps: float
    fd_noise: float
    max_fd_coords: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(leaf.ok for leaf in self.leaves)

    @property
    def failures(self) -> tuple[LeafCheck, ...]:
        return tuple(leaf for leaf in self.leaves if not leaf.ok)

    def verdict(self) -> str:
        """One line: passed/failed, how many leaves, the tolerances, any sampling."""
        n = len(self.leaves)
        sampled = sum(leaf.sampled for leaf in self.leaves)
        tail = (
            f"; finite differences on a random {self.max_fd_coords}-coordinate subset of "
            f"{sampled} large leaf(s)"
            if sampled
            else ""
        )
        tol = (
            f"(vs jax.grad rtol {self.grad_rtol:g} in {self.dtype}, vs finite differences rtol "
            f"{self.fd_rtol:g} in float64, atol {self.atol_frac:g} x rtol x leaf scale{tail})"
        )
        if self.ok:
            return f"OK: all {n} gradient leaves agree {tol}"
        bad = ", ".join(leaf.name for leaf in self.failures)
        return f"FAILED: {len(self.failures)} of {n} gradient leaves disagree: {bad} {tol}"

    def __str__(self) -> str:
        lines = [
            f"{'leaf':<28} {'shape':<10} {'abs vs grad':>11} {'rel vs grad':>11} "
            f"{'abs vs FD':>10} {'rel vs FD':>10}  ok"
        ]
        for c in self.leaves:
            lines.append(
                f"{c.name:<28} {str(c.shape):<10} {c.grad_abs_err:11.2e} {c.grad_rel_err:11.2e} "
                f"{c.fd_abs_err:10.2e} {c.fd_rel_err:10.2e}  {'yes' if c.ok else 'NO'}"
                + (f"  (FD on {c.fd_coords}/{c.size})" if c.sampled else "")
            )
        return "\n".join(lines + [self.verdict()])


def _path_str(path) -> str:
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        else:
            parts.append(str(k))
    return " ".join(parts)


def leaf_names(model: Model, params) -> list[str]:
    """``"layer i <layer name> <key...>"`` for every leaf of ``params``, in tree order."""
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        first, rest = path[0], path[1:]
        if isinstance(first, jax.tree_util.SequenceKey) and first.idx < len(model.layers):
            head = f"layer {first.idx} {model.layers[first.idx].name}"
            names.append(f"{head} {_path_str(rest)}".rstrip())
        else:
            names.append(_path_str(path))
    return names


def _scale(r: np.ndarray, global_scale: float) -> float:
    s = float(np.max(np.abs(r))) if r.size else 0.0
    if s == 0.0:
        s = global_scale
    return s if s > 0.0 else 1.0


def _errors(g, r, rtol: float, scale: float, extra_atol: float = 0.0):
    """``(abs_err, rel_err, ok)`` per the module docstring."""
    g, r = np.asarray(g, np.float64).ravel(), np.asarray(r, np.float64).ravel()
    if g.size == 0:
        return 0.0, 0.0, True
    atol = rtol * ATOL_FRAC * scale + extra_atol
    diff = np.abs(g - r)
    if not np.all(np.isfinite(diff)):
        return float("inf"), float("inf"), False
    rel = float(np.max(diff / (np.abs(r) + atol / rtol)))
    return float(np.max(diff)), rel, rel <= rtol


def _central_differences(loss_fn, params, coords: np.ndarray, h: float) -> np.ndarray:
    """Central differences of ``loss_fn(params)`` w.r.t. the given coordinates of the flattened
    params (``ravel_pytree`` order, which is ``jax.tree.leaves`` order)."""
    flat, unravel = ravel_pytree(params)

    def central(c):
        e = jnp.zeros_like(flat).at[c].set(h)
        return (loss_fn(unravel(flat + e)) - loss_fn(unravel(flat - e))) / (2 * h)

    # vmap in chunks of FD_CHUNK coordinates: memory stays FD_CHUNK copies of the params
    run = jax.jit(lambda cs: jax.lax.map(central, cs, batch_size=FD_CHUNK))
    return np.asarray(run(jnp.asarray(coords)))


def check_gradients(
    model: Model,
    loss: str | Loss,
    params,
    x,
    t,
    *,
    grad_rtol: float | None = None,
    fd_rtol: float = TOLERANCES["fd"],
    fd_eps: float = FD_EPS,
    max_fd_coords: int = MAX_FD_COORDS,
    seed: int = 0,
) -> GradCheckReport:
    """Check the hand-written gradient of ``loss(model.apply(params, x), t)`` leaf by leaf.

    ``grad_rtol`` defaults to ``TOLERANCES["grad_float32"]`` or ``["grad_float64"]`` by the
    params' dtype. ``seed`` picks the coordinates of leaves larger than ``max_fd_coords``.
    Raises ``ValueError`` for bad input (as :func:`jaxprop.value_and_grad`).
    """
    loss = get_loss(loss)
    if max_fd_coords < 1:
        raise ValueError(f"max_fd_coords must be >= 1, got {max_fd_coords}")
    x, t = validate_data(params, x, t, loss=loss)
    dtype = jnp.result_type(*jax.tree.leaves(params)) if jax.tree.leaves(params) else x.dtype
    dtype_name = jnp.dtype(dtype).name
    if grad_rtol is None:
        grad_rtol = TOLERANCES["grad_float64" if dtype_name == "float64" else "grad_float32"]
    names = leaf_names(model, params)

    def ref_loss(p, x, t):
        return loss.value(model.forward(p, None, x)[0], t)

    with jax.default_matmul_precision("highest"):
        # (a) hand-written vs jax.grad, in the params' dtype
        value, hand = value_and_grad(model, loss, params, x, t)
        ref = jax.jit(jax.grad(ref_loss))(params, x, t)
        hand_l = [np.asarray(a) for a in jax.tree.leaves(hand)]
        ref_l = [np.asarray(a) for a in jax.tree.leaves(ref)]

        # (b) hand-written vs central finite differences, both in float64
        with jax.enable_x64(True):
            to64 = lambda a: jnp.asarray(a, jnp.float64)  # noqa: E731
            p64 = jax.tree.map(to64, params)
            x64, t64 = to64(x), to64(t) if jnp.issubdtype(t.dtype, jnp.floating) else t
            value64, hand64 = jax.jit(loss_and_grad_fn(model, loss))(p64, x64, t64)
            hand64_l = [np.asarray(a) for a in jax.tree.leaves(hand64)]
            loss64 = lambda p: ref_loss(p, x64, t64)  # noqa: E731
            fd_noise = FD_NOISE_ULPS * float(np.finfo(np.float64).eps) * (
                1.0 + abs(float(value64))
            ) / fd_eps
            rng = np.random.default_rng(seed)
            sizes = [int(leaf.size) for leaf in jax.tree.leaves(p64)]
            coords_l = [
                np.arange(n)
                if n <= max_fd_coords
                else np.sort(rng.choice(n, size=max_fd_coords, replace=False))
                for n in sizes
            ]
            offsets = np.cumsum([0] + sizes[:-1])
            all_coords = np.concatenate(
                [c + o for c, o in zip(coords_l, offsets)] + [np.zeros((0,), np.int64)]
            )
            fd_all = (
                _central_differences(loss64, p64, all_coords, fd_eps)
                if all_coords.size
                else np.zeros((0,))
            )
            fd_l = np.split(fd_all, np.cumsum([c.size for c in coords_l])[:-1])

    global_ref = max((float(np.max(np.abs(r))) for r in ref_l if r.size), default=0.0)
    global_fd = max((float(np.max(np.abs(f))) for f in fd_l if f.size), default=0.0)
    checks = []
    for name, g, r, g64, fd, coords in zip(names, hand_l, ref_l, hand64_l, fd_l, coords_l):
        ga, gr, gok = _errors(g, r, grad_rtol, _scale(r, global_ref))
        fa, fr, fok = _errors(
            g64.ravel()[coords], fd, fd_rtol, _scale(fd, global_fd), extra_atol=fd_noise
        )
        checks.append(
            LeafCheck(
                name=name,
                shape=tuple(int(s) for s in g.shape),
                dtype=str(g.dtype),
                grad_abs_err=ga,
                grad_rel_err=gr,
                grad_ok=gok,
                fd_abs_err=fa,
                fd_rel_err=fr,
                fd_ok=fok,
                fd_coords=int(coords.size),
            )
        )
    return GradCheckReport(
        leaves=tuple(checks),
        dtype=dtype_name,
        loss_value=float(value),
        grad_rtol=grad_rtol,
        fd_rtol=fd_rtol,
        atol_frac=ATOL_FRAC,
        fd_eps=fd_eps,
        fd_noise=fd_noise,
        max_fd_coords=max_fd_coords,
        settings={"seed": seed, "loss": loss.name, "model": model.describe()},
    )
