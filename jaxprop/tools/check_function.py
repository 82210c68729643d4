"""Checking any JAX function's gradient rule: ``check_vjp`` (reverse mode, e.g. a
``jax.custom_vjp``) and ``check_jvp`` (forward mode, e.g. a ``jax.custom_jvp``).

The rule under test runs in the arguments' own dtype (float64, float32, float16 or bfloat16);
the reference runs in float64 at the same (upcast) point, so the input rounding is the same on
both sides and only the rule's own arithmetic is judged:

* ``reference=`` given: autodiff (``jax.vjp``/``jax.jvp``) of that function;
* else, for a ``jax.custom_vjp``/``jax.custom_jvp`` function, autodiff of its undecorated primal
  ``fn.fun`` when JAX can differentiate it (in that mode);
* else central finite differences in float64, coordinate by coordinate (at most
  ``max_fd_coords`` random coordinates per leaf), at steps ``h`` and ``h/100``, keeping per entry
  the step that agrees best (a step across a kink spoils a difference; a wrong rule stays wrong).

One error measure for every entry ``i``, with the tolerances of the rule's dtype::

    error_i = |g_i - r_i| / (rtol * |r_i| + atol),   atol = rtol * ATOL_FRAC[dtype] * max|r|

(plus the rounding noise of a float64 difference, ``16 eps64 |f| / h``, against finite
differences); an entry agrees when ``error_i <= 1``. The reports name the argument, the leaf
(its path) and the worst disagreeing elements.

Where the arguments are given as shapes (``jax.ShapeDtypeStruct``), the check runs at several
of :func:`~jaxprop.check_layer`'s input draws (``draws=``; default :data:`FUNCTION_DRAWS`: N(0, 1)
and wide x10; ``"kinks"`` adds values near the kinks and saturation points) and fails at the
first draw that disagrees, naming it; arrays given as arrays are the point itself.

Reverse mode: a random cotangent ``ct`` (N(0, 1), in the output's dtype) and every floating
argument leaf's ``ct^T J``. Forward mode: one random tangent per floating argument leaf (zero
elsewhere), and every floating output leaf's ``J t``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxprop.core.validate import is_int
from jaxprop.core.registry import lookup
from jaxprop.tools.gradcheck import (
    DRAWS,
    FD_EPS,
    FD_NOISE_ULPS,
    FD_STEPS,
    Draw,
    central_differences,
    x64_for,
)
from jaxprop.tools.gradcheck_report import FunctionReport, LeafDiff

# rtol of the rule under test, per dtype (about 100 ulps in float32, 4 in float16/bfloat16,
# where every operation rounds), and atol as a fraction of rtol * the leaf's largest reference
# entry (in float16/bfloat16 all of it: a sum that cancels keeps an ulp of its largest term)
RTOL = {"float64": 1e-10, "float32": 1e-5, "float16": 4e-3, "bfloat16": 3e-2}
ATOL_FRAC = {"float64": 1e-2, "float32": 1e-1, "float16": 1.0, "bfloat16": 1.0}
# below float64, each entry's atol also grows by AUTODIFF_SLACK times the error of JAX's own
# autodiff of the reference in the same dtype (the rounding an ill-conditioned entry cannot avoid)
AUTODIFF_SLACK = 4.0
FD_RTOL = 1e-6  # finite differences in float64 (at least this, whatever the rule's dtype)
MAX_FD_COORDS = 128
# Where ShapeDtypeStruct arguments are drawn by default (check_layer's DRAWS but near-kink: its
# mix of large and small entries in every argument, weights included, makes sums that cancel,
# whose float32 rounding an honest rule cannot avoid; draws=("kinks",) asks for it)
FUNCTION_DRAWS = ("normal", "wide")


def _name(fn) -> str:
    inner = getattr(fn, "fun", fn)
    return getattr(inner, "__name__", type(fn).__name__)


def _arg_names(fn, n: int) -> list[str]:
    """``"x"``, ``"w"`` from the signature of ``fn`` (its primal), else ``"args[i]"``."""
    try:
        params = list(inspect.signature(getattr(fn, "fun", fn)).parameters.values())
    except (TypeError, ValueError):
        params = []
    named = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [named[i] if i < len(named) else f"args[{i}]" for i in range(n)]


def _is_float(a) -> bool:
    return jnp.issubdtype(jnp.result_type(a), jnp.floating)


def _prepare(args, dtype, rng: np.random.Generator, draw: Draw = DRAWS["normal"]) -> tuple:
    """The arguments to check at: arrays as given (a ``jax.ShapeDtypeStruct`` drawn from
    ``draw``), floating leaves cast to ``dtype`` when given; ``ValueError`` for non-arrays."""
    def leaf(a):
        if isinstance(a, jax.ShapeDtypeStruct):
            a = np.asarray(draw.sample(rng, a.shape)).astype(a.dtype) if _is_float(a) \
                else np.zeros(a.shape, a.dtype)
        try:
            a = jnp.asarray(a)
        except TypeError as e:
            raise ValueError(f"arguments must be arrays (or pytrees of arrays), got "
                             f"{type(a).__name__}") from e
        if dtype is not None and _is_float(a):
            a = a.astype(dtype)
        if _is_float(a) and not bool(jnp.all(jnp.isfinite(a))):
            raise ValueError("the arguments contain NaN/Inf; gradients cannot be checked there")
        return a

    return tuple(jax.tree.map(leaf, a) for a in args)


def _dtype_name(args) -> str:
    """The rule's dtype: the widest floating dtype among the arguments."""
    floats = [a.dtype for a in jax.tree.leaves(args) if _is_float(a)]
    if not floats:
        raise ValueError("no floating-point argument: nothing to differentiate")
    name = jnp.result_type(*floats).name
    if name not in RTOL:
        raise ValueError(f"dtype must be one of {', '.join(RTOL)}, got {name}")
    return name


def _to64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if _is_float(a) else a, tree)


def _random_like(tree, rng: np.random.Generator):
    """N(0, 1) in each floating leaf's dtype; float0 zeros (no tangent) elsewhere."""
    return jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(np.shape(a))).astype(a.dtype)
                        if _is_float(a) else np.zeros(np.shape(a), jax.dtypes.float0), tree)


def _differentiable(mode: str, fn, args64) -> bool:
    """Whether JAX can differentiate ``fn`` at ``args64`` in ``mode`` ("vjp" or "jvp")."""
    try:
        if mode == "vjp":
            jax.eval_shape(lambda *a: jax.vjp(fn, *a)[1](fn(*a)), *args64)
        else:
            jax.eval_shape(lambda *a: jax.jvp(fn, a, a), *args64)
    except Exception:  # noqa: BLE001 - any refusal (while_loop, callbacks) means: use FD
        return False
    return True


def _reference(mode: str, fn, reference, args64) -> tuple[Callable | None, str]:
    """``(function to differentiate in float64, or None for finite differences, its name)``."""
    if reference is not None:
        if not callable(reference):
            raise ValueError(f"reference must be a function, got {type(reference).__name__}")
        return reference, f"jax.{mode} of the given reference in float64"
    custom = jax.custom_vjp if mode == "vjp" else jax.custom_jvp
    if isinstance(fn, custom) and _differentiable(mode, fn.fun, args64):
        return fn.fun, f"jax.{mode} of the undecorated primal (fn.fun) in float64"
    return None, "finite differences in float64"


def _tolerance(dtype_name: str, fd: bool) -> tuple[float, float]:
    rtol = RTOL[dtype_name]
    return (max(rtol, FD_RTOL) if fd else rtol), ATOL_FRAC[dtype_name]


def _leaf_diff(where: str, g, refs, noises, rtol: float, atol_frac: float,
               coords=None, auto=None) -> LeafDiff:
    """One leaf: the rule's values ``g`` against ``refs`` (one row per step; the best step per
    entry), at ``coords`` of the flattened leaf (default: all); ``auto``: autodiff of the
    reference in the rule's dtype, whose error widens each entry's atol."""
    g = np.asarray(g, np.float64)
    flat = g.ravel() if coords is None else g.ravel()[coords]
    refs = np.asarray(refs, np.float64).reshape(len(noises), -1)
    scale = float(np.max(np.abs(refs[0]))) if refs.size else 0.0
    atol = rtol * atol_frac * (scale if scale > 0 else 1.0) + np.asarray(noises)[:, None]
    if auto is not None:
        slack = np.abs(np.asarray(auto, np.float64).ravel() - refs[0])
        atol = atol + AUTODIFF_SLACK * np.where(np.isfinite(slack), slack, 0.0)[None]
    with np.errstate(invalid="ignore"):
        diff = np.abs(flat[None] - refs)
        err = np.where(np.isfinite(diff), diff / (rtol * np.abs(refs) + atol), np.inf)
    best = np.argmin(err, axis=0)
    cols = np.arange(err.shape[1])
    err, ref = err[best, cols], refs[best, cols]
    at = np.arange(flat.size) if coords is None else np.asarray(coords)
    order = np.argsort(-err)[:3]
    worst = tuple((tuple(int(i) for i in np.unravel_index(at[j], g.shape)), float(flat[j]),
                   float(ref[j])) for j in order if err[j] > 1)
    return LeafDiff(where=where, shape=tuple(g.shape), error=float(np.max(err, initial=0.0)),
                    n_bad=int(np.sum(err > 1)), n_checked=int(flat.size), worst=worst)


def _leaves_with_names(tree, head: str) -> list[tuple[str, object]]:
    return [(f"{head}{jax.tree_util.keystr(p)}", a)
            for p, a in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _fd_noise(y64, ct=None) -> float:
    """Rounding noise scale of a float64 difference of ``<ct, y>`` (or of ``y``'s entries)."""
    leaves = jax.tree.leaves(y64)
    size = sum(float(np.sum(np.abs(np.asarray(y) * (1 if c is None else np.asarray(c)))))
               for y, c in zip(leaves, jax.tree.leaves(ct) if ct is not None else
                               [None] * len(leaves)) if _is_float(y))
    return FD_NOISE_ULPS * float(np.finfo(np.float64).eps) * (1.0 + size)


def _fd_coords(n: int, max_coords: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= max_coords else np.sort(rng.choice(n, max_coords, replace=False))


def check_vjp(fn: Callable, *args, reference: Callable | None = None, dtype=None,
              seed: int = 0, max_fd_coords: int = MAX_FD_COORDS,
              draws=FUNCTION_DRAWS) -> FunctionReport:
    """Check ``fn``'s reverse-mode rule (a ``jax.custom_vjp``, or whatever JAX does for ``fn``)
    at ``args``: ``ct^T J`` for a random cotangent, every floating argument leaf.

    Args:
      fn: the function; a ``jax.custom_vjp`` is checked against autodiff of ``fn.fun``.
      *args: the point: arrays or pytrees of arrays; a ``jax.ShapeDtypeStruct`` is drawn
        from each of ``draws`` in turn.
      reference: a function computing the same value whose autodiff is right (default: see
        the module docstring).
      dtype: cast the floating arguments to this dtype first (float64, float32, float16 or
        bfloat16); default: as given.
      seed: draws the cotangent, the arguments of ``ShapeDtypeStruct``s and sampled coordinates.
      max_fd_coords: finite differences on at most this many random coordinates per leaf.
      draws: where ``ShapeDtypeStruct`` arguments are drawn (names of
        :data:`~jaxprop.tools.gradcheck.DRAWS`: ``"normal"``, ``"wide"``, ``"kinks"``; default
        :data:`FUNCTION_DRAWS`, the first two): one check per draw, the report of the first
        that fails (else of the one with the largest error).

    Returns:
      a :class:`~jaxprop.tools.gradcheck_report.FunctionReport` (``.ok``, ``.verdict()``,
      ``.details()``). Raises ``ValueError`` for bad arguments or a failing ``fn``.
    """
    return _check("vjp", fn, args, reference, dtype, seed, max_fd_coords, draws)


def check_jvp(fn: Callable, *args, reference: Callable | None = None, dtype=None,
              seed: int = 0, max_fd_coords: int = MAX_FD_COORDS,
              draws=FUNCTION_DRAWS) -> FunctionReport:
    """Check ``fn``'s forward-mode rule (a ``jax.custom_jvp``, or whatever JAX does for ``fn``)
    at ``args``: ``J t`` for a random tangent on each floating argument leaf in turn.

    Arguments and draws as :func:`check_vjp` (a ``jax.custom_jvp`` is checked against ``jax.jvp`` of
    ``fn.fun``; ``max_fd_coords`` is unused: a difference along the tangent gives every output
    entry at once).
    """
    return _check("jvp", fn, args, reference, dtype, seed, max_fd_coords, draws)


def _check(mode, fn, args, reference, dtype, seed, max_fd_coords, draws) -> FunctionReport:
    """One check per draw where an argument is a ``ShapeDtypeStruct``, else one at ``args``."""
    if not callable(fn):
        raise ValueError(f"check_{mode} takes a function, got {type(fn).__name__}")
    if not args:
        raise ValueError(f"check_{mode} needs the arguments to check at: check_{mode}(fn, x, ...)")
    if not is_int(max_fd_coords) or max_fd_coords < 1:
        raise ValueError(f"max_fd_coords must be a positive int, got {max_fd_coords!r}")
    if dtype is not None:
        name = jnp.dtype(dtype).name
        if name not in RTOL:
            raise ValueError(f"dtype must be one of {', '.join(RTOL)}, got {name}")
    shapes = any(isinstance(a, jax.ShapeDtypeStruct) for a in jax.tree.leaves(
        args, is_leaf=lambda a: isinstance(a, jax.ShapeDtypeStruct)))
    names = (draws,) if isinstance(draws, str) else tuple(draws)
    chosen = [lookup(DRAWS, name, "input draw") for name in names] if shapes else [None]
    if not chosen:
        raise ValueError("draws is empty: give at least one of " + ", ".join(DRAWS))
    reports = []
    for draw in chosen:
        reports.append(_check_at(mode, fn, args, reference, dtype, seed, max_fd_coords, draw))
        if not reports[-1].ok:
            return reports[-1]
    worst = max(reports, key=lambda r: max((leaf.error for leaf in r.leaves), default=0.0))
    return dataclasses.replace(worst, settings={
        **worst.settings, "draws": [r.draw for r in reports if r.draw]})


def _check_at(mode, fn, args, reference, dtype, seed, max_fd_coords, draw) -> FunctionReport:
    rng = np.random.default_rng(seed)
    with x64_for(None if dtype is None else jnp.dtype(dtype).name):
        args = _prepare(args, dtype, rng, draw or DRAWS["normal"])
        dtype_name = _dtype_name(args)
        try:
            y = jax.eval_shape(fn, *args)
        except Exception as e:  # noqa: BLE001 - the user's function: one line
            raise ValueError(f"{_name(fn)} fails on these arguments: {type(e).__name__}: "
                             f"{e}") from e
        run = _vjp_leaves if mode == "vjp" else _jvp_leaves
        leaves, ref_name, fd = run(fn, args, y, reference, rng, max_fd_coords, dtype_name)
    rtol, atol_frac = _tolerance(dtype_name, fd)
    slack = AUTODIFF_SLACK if not fd and dtype_name != "float64" else None
    return FunctionReport(
        mode=mode, function=_name(fn), reference=ref_name, dtype=dtype_name, rtol=rtol,
        atol_frac=atol_frac, leaves=tuple(leaves), settings={"seed": seed},
        autodiff_slack=slack, draw=None if draw is None else draw.name)


def _in_dtype(run, dtype_name: str, fd: bool):
    """``run()``: JAX's autodiff of the reference in the rule's own dtype (below float64, with
    an autodiff reference), or ``None`` (also when it fails: the slack is then 0)."""
    if fd or dtype_name == "float64":
        return None
    try:
        with jax.default_matmul_precision("highest"):
            return run()
    except Exception:  # noqa: BLE001 - a reference that only runs in float64: no slack
        return None


def _vjp_leaves(fn, args, y, reference, rng, max_fd_coords, dtype_name):
    names = _arg_names(fn, len(args))
    ct = _random_like(y, rng)
    with jax.default_matmul_precision("highest"):
        hand = jax.vjp(fn, *args)[1](ct)
        with jax.enable_x64(True):
            args64, ct64 = _to64(args), _to64(ct)
            ref_fn, ref_name = _reference("vjp", fn, reference, args64)
            fd = ref_fn is None
            if not fd:
                refs = [[r] for r in jax.tree.leaves(jax.vjp(ref_fn, *args64)[1](ct64))]
                noises = [0.0]
            else:
                refs, noises = _vjp_fd(fn, args64, ct64, rng, max_fd_coords)
    auto = _in_dtype(lambda: jax.vjp(ref_fn, *args)[1](ct), dtype_name, fd)
    auto = [None] * len(refs) if auto is None else [a for a in jax.tree.leaves(auto)]
    rtol, atol_frac = _tolerance(dtype_name, fd)
    out, k = [], 0
    for i, (name, arg, g_arg) in enumerate(zip(names, args, hand)):
        for (where, a), g in zip(_leaves_with_names(arg, f"argument {i} ({name})"),
                                 jax.tree.leaves(g_arg)):
            if _is_float(a):
                r = refs[k]
                coords = None if not fd else r[1]
                out.append(_leaf_diff(where, g, r[0] if fd else r[0][None], noises, rtol,
                                      atol_frac, coords, auto[k]))
            k += 1
    return out, ref_name, fd


def _vjp_fd(fn, args64, ct64, rng, max_fd_coords):
    """Per argument leaf: ``((n_steps, n_coords) differences of <ct, fn>, coords)``."""
    leaves = jax.tree.leaves(args64)
    coords = [_fd_coords(a.size, max_fd_coords, rng) if _is_float(a) else np.zeros(0, int)
              for a in leaves]
    noise = _fd_noise(fn(*args64), ct64)
    h = FD_EPS

    def phi(args):
        out = fn(*args)
        return sum(jnp.sum(c * o) for c, o in zip(jax.tree.leaves(ct64), jax.tree.leaves(out))
                   if _is_float(o))

    diffs = central_differences(phi, tuple(args64), coords, h, FD_STEPS)
    return [(d, c) for d, c in zip(diffs, coords)], [noise / (h * s) for s in FD_STEPS]


def _jvp_leaves(fn, args, y, reference, rng, max_fd_coords, dtype_name):
    del max_fd_coords  # a difference along the tangent gives every output entry
    names = _arg_names(fn, len(args))
    flat, treedef = jax.tree.flatten(args)
    with jax.enable_x64(True):
        a64 = _to64(args)  # the point in float64, for every tangent
        ref_fn, ref_name = _reference("jvp", fn, reference, a64)
    fd = ref_fn is None
    rtol, atol_frac = _tolerance(dtype_name, fd)
    in_names = [w for i, a in enumerate(args)
                for w, _ in _leaves_with_names(a, f"argument {i} ({names[i]})")]
    out = []
    for k, a in enumerate(flat):
        if not _is_float(a):
            continue
        tangent = [np.zeros(np.shape(b), jax.dtypes.float0) if not _is_float(b) else
                   (jnp.asarray(rng.standard_normal(np.shape(b))).astype(b.dtype) if j == k
                    else jnp.zeros_like(b)) for j, b in enumerate(flat)]
        t_args = treedef.unflatten(tangent)
        with jax.default_matmul_precision("highest"):
            hand = jax.tree.leaves(jax.jvp(fn, args, t_args)[1])
            with jax.enable_x64(True):
                t64 = _to64(t_args)
                if not fd:
                    refs = [r[None] for r in jax.tree.leaves(jax.jvp(ref_fn, a64, t64)[1])]
                    noises = [0.0]
                else:
                    refs, noises = _jvp_fd(fn, a64, t64, k)
        auto = _in_dtype(lambda: jax.jvp(ref_fn, args, t_args)[1], dtype_name, fd)
        auto = [None] * len(refs) if auto is None else jax.tree.leaves(auto)
        for (where, o), g, r, a in zip(_leaves_with_names(y, "output"), hand, refs, auto):
            if _is_float(o):
                out.append(_leaf_diff(f"{in_names[k]} -> {where}", g, r, noises, rtol,
                                      atol_frac, auto=a))
    return out, ref_name, fd


def _jvp_fd(fn, a64, t64, k):
    """``J t`` by central differences along the tangent (steps ``h``, ``h/100``)."""
    flat = jax.tree.leaves(a64)
    h = FD_EPS * max(1.0, float(jnp.sqrt(jnp.mean(jnp.square(flat[k])))))
    t_flat = jax.tree.leaves(t64)

    def at(step):
        moved = [a + step * t if j == k else a for j, (a, t) in
                 enumerate(zip(flat, t_flat))]
        return jax.tree.leaves(fn(*jax.tree.unflatten(jax.tree.structure(a64), moved)))

    rows = [[(p - m) / (2 * h * s) for p, m in zip(at(h * s), at(-h * s))] for s in FD_STEPS]
    refs = [np.stack([np.asarray(r[o], np.float64).ravel() for r in rows])
            for o in range(len(rows[0]))]
    noise = _fd_noise(fn(*a64))
    return refs, [noise / (h * s) for s in FD_STEPS]
