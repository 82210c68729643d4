"""Gradient checking: every hand-written backward pass against autodiff and finite differences.

Three entry points, all returning a report with ``.ok``, ``.verdict()`` (one line of at most
120 characters), ``.details()`` and a table (``str``):

* :func:`check_layer` -- one layer alone, at random *non-trivial* params (what ``init`` gives,
  perturbed, so a scale of 1 or zero biases cannot hide a bug), a random cotangent ``dy`` and
  inputs from several draws (:data:`DRAWS`: N(0, 1), N(0, 10^2) and values near the kinks and
  saturation points of common activations; plus the user's ``inputs=``), params perturbed
  afresh for each; reports name the draw.
* :func:`check_gradients` -- a model: first every layer on the activations that actually reach
  it (nested models layer by layer; jittered by 1e-3 of their size, off the exact ties a ReLU
  hands a max-pool), at the given params and by default again at perturbed params; then the
  end-to-end gradient of the loss. A wrong layer is named by its index and
  ``name`` -- also a parameter-free one whose ``dx`` is wrong, which no parameter gradient
  downstream of it would show.
* :func:`check_loss` -- a loss's ``grad`` (and ``target_grad``) the same way.

**One layer at one point** (``x``, params, state, key, ``train``). The layer's ``backward`` gives
``(dparams, dx)`` for the cotangent ``dy``; its output is first checked for structure, shape and
dtype (:func:`jaxprop.core.checks.check_backward_output`: a malformed result is reported with
the layer, the leaf and both shapes). Then every *quantity* -- ``dx`` (when ``x`` is floating)
and every floating ``dparams`` leaf -- is compared with

* ``jax.vjp`` of the layer's own ``forward`` (same state, key and ``train``) in the working
  dtype (float32 unless asked otherwise): checks the implementation as it runs;
* ``jax.vjp`` in float64 (inside ``jax.enable_x64(True)``): checks it without rounding noise;
* central finite differences in float64 along ``fd_directions`` random directions ``u`` per
  quantity: ``(<dy, f(q + h u)> - <dy, f(q - h u)>) / 2h`` against ``<g_q, u>``, i.e.
  ``dy^T J u`` (as jax's ``check_vjp`` and PyTorch's ``gradcheck(fast_mode=True)``); cheap for
  any size and independent of autodiff, so it checks the mathematics. ``h = FD_EPS * max(1,
  rms(q))``, and again ``h / 100`` (``FD_STEPS``): each direction keeps the step that agrees
  best, because a step across a kink (ReLU, max-pooling) spoils a difference and stops doing
  so as the step shrinks, while a wrong gradient stays wrong at every step.

A layer check passes only if it checked at least one quantity and all agree; a report is never
``ok`` with nothing checked. "Non-trivial" params (:func:`perturb`): non-zero entries times
``exp(0.5 N(0, 1))``, zero entries ``0.5 rms N(0, 1)``; state is perturbed the same way in
:func:`check_layer` (signs kept, so a running variance stays positive).

Each pass (the working dtype; float64) over all the layers of a model is ONE compiled program
(compiled fast on CPU); the cotangents and directions are drawn on the host with NumPy
(``jax.random`` would take longer to compile than the whole check runs). A 784-1024-1024-10
MLP checks in seconds on 2 CPU cores (``benchmarks/gradcheck_speed.py``).

**End to end** (:func:`check_gradients`): every parameter leaf (named ``"layer 0 Dense(4) W"``)
of the hand-written gradient (:func:`jaxprop.value_and_grad`) against ``jax.grad`` of ``loss(
model(params, x), t)`` in the params' dtype, and against central differences ``(L(p + h e_i) -
L(p - h e_i)) / 2h`` in float64 coordinate by coordinate (``h = FD_EPS``). Leaves with more than
``max_fd_coords`` entries are checked on a random subset of that many coordinates
(``LeafCheck.fd_coords < LeafCheck.size``; the report says so); the per-layer
random-direction checks cover every coordinate of them. Coordinates that disagree at ``h`` are
differenced again at ``h / 100`` (kinks, as above).

Everything runs under ``jax.default_matmul_precision("highest")`` (TF32/bf16 matmuls on GPU/TPU
would otherwise dominate the error).

Error definitions, for a hand-written quantity ``g`` and a reference ``r`` (entries ``i``; for
finite differences along directions: one entry per direction)::

    abs_err = max_i |g_i - r_i|
    rel_err = max_i |g_i - r_i| / (|r_i| + atol / rtol)
    atol    = rtol * atol_frac * scale        (+ fd_noise for finite differences)
    scale   = max_i |r_i| over the quantity (if 0: over the layer or the whole gradient; else 1)

(for directions, ``scale`` is the root mean square of the directional derivatives, ~ ``||r||``),
so ``rel_err <= rtol`` exactly when ``|g_i - r_i| <= rtol * |r_i| + atol`` for every ``i``
(``numpy.allclose(g, r, rtol, atol)``). Reports show one measure, ``error = rel_err / rtol =
max_i |g_i - r_i| / (rtol |r_i| + atol)``: at most 1 agrees, whatever the reference. The small
``atol`` (a fraction of the quantity's own scale) keeps entries that are zero up to rounding --
sums that cancel -- from failing on noise.
Against autodiff, ``atol`` also has a floor of ``CANCEL_ULPS * eps(dtype)`` times the largest
entry of the whole gradient (of the layer, end to end: of all leaves), for entries that are 0
exactly but come out of sums that cancel (a bias before BatchNorm), where a leaf's own scale is
noise too. ``fd_noise = FD_NOISE_ULPS * eps64 * M / h`` bounds the rounding error of a float64 central
difference of a function of size ``M`` (``1 + |L|`` for the loss, ``sum |dy * y|`` for a
layer). Defaults (:data:`TOLERANCES`):

=========================  ========  ==========  ==========================================
reference                  rtol      atol_frac   notes
=========================  ========  ==========  ==========================================
jax.grad/vjp, float32      1e-5      1e-1        atol = 1e-6 * scale (wide layers sum
                                                 thousands of float32 products)
jax.grad/vjp, float64      1e-10     1e-2        atol = 1e-12 * scale
finite differences         1e-6      1e-2        h = 1e-6, float64; fd_noise ~ 3.6e-9 M
=========================  ========  ==========  ==========================================
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxprop.core.backprop import loss_and_grad_fn, value_and_grad
from jaxprop.core.checks import BackwardError, checked_backward, params_dtype, validate_data
from jaxprop.core.layers import Layer
from jaxprop.core.losses import Loss, get_loss
from jaxprop.core.network import Model, Spec
from jaxprop.core.registry import lookup
from jaxprop.core.validate import check_number, is_int, is_number
from jaxprop.tools.gradcheck_report import (
    Comparison,
    GradCheckReport,
    LayerCheck,
    LayerReport,
    LeafCheck,
    QuantityCheck,
    label,
)
from jaxprop.train.compile import FAST_COMPILE
from jaxprop.train.memory import check_fits as check_memory
from jaxprop.train.memory import nbytes
from jaxprop.train.precision import cast_floating as _cast
from jaxprop.train.precision import is_float as _is_float

# rtol per reference (and per dtype for autodiff); atol = rtol * atol_frac * scale.
TOLERANCES: dict[str, float] = {
    "grad_float32": 1e-5,
    "grad_float64": 1e-10,
    "fd": 1e-6,
}
ATOL_FRAC = 1e-2
ATOL_FRAC_FLOAT32 = 1e-1
FD_EPS = 1e-6
FD_NOISE_ULPS = 16
MAX_FD_COORDS = 64
FD_DIRECTIONS = 3
FD_STEPS = (1.0, 1e-2)  # central differences at h and h/100 (see _errors_steps)
FD_MEMORY = 1 << 27  # bytes of perturbed parameter copies alive at once (end-to-end FD)
PERTURB_SCALE = 0.5
CANCEL_ULPS = 1000  # atol floor vs autodiff, in ulps of the largest entry (_cancel_floor)
JITTER = 1e-3  # per-layer checks in a model: inputs moved by JITTER * rms (see check_model_layers)

FD_REFERENCE = "finite differences float64"
DEFAULT_BATCH = 8  # examples per draw in check_layer and `jaxprop check`
WIDE_SCALE = 10.0  # the "wide" draw: N(0, WIDE_SCALE**2)
LARGE = 80.0  # near-kink draws reach -LARGE (exp(-x) overflows float32 at 88.7)


# --------------------------------------------------------------------------------------------
# Errors


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


def _errors(g, r, rtol: float, scale: float, extra_atol: float = 0.0,
            atol_frac: float = ATOL_FRAC):
    """``(abs_err, rel_err, ok)`` per the module docstring (``extra_atol``: ``fd_noise`` or
    the cancellation floor, :func:`_cancel_floor`)."""
    g, r = np.asarray(g, np.float64).ravel(), np.asarray(r, np.float64).ravel()
    if g.size == 0:
        return 0.0, 0.0, True
    atol = rtol * atol_frac * scale + extra_atol
    with np.errstate(invalid="ignore"):  # the same infinity on both sides agrees (not inf-inf)
        diff = np.where(np.isinf(g) & (g == r), 0.0, np.abs(g - r))
    if not np.all(np.isfinite(diff)):
        return float("inf"), float("inf"), False
    rel = float(np.max(diff / (np.abs(r) + atol / rtol)))
    return float(np.max(diff)), rel, rel <= rtol


def _rel_steps(g, fds, rtol: float, scale: float, noises: Sequence[float]):
    """Per entry and per step: ``(|g - fd|, relative error)`` as in ``_errors`` (an entry not
    evaluated at a step, NaN, has an infinite error there)."""
    g = np.asarray(g, np.float64).ravel()
    fds = np.asarray(fds, np.float64).reshape(len(noises), -1)
    atol = rtol * ATOL_FRAC * scale + np.asarray(noises, np.float64)[:, None]
    diff = np.abs(g[None] - fds)
    rel = np.where(np.isfinite(diff), diff / (np.abs(fds) + atol / rtol), np.inf)
    return diff, rel


def _errors_steps(g, fds, rtol: float, scale: float, noises: Sequence[float]):
    """``_errors`` of ``g`` against central differences taken with each of ``FD_STEPS``
    (``fds[j]``, rounding noise ``noises[j]``), keeping for every entry the step that agrees
    best: a step across a kink (ReLU, max) spoils a difference and stops doing so as the step
    shrinks; a wrong gradient stays wrong at every step."""
    if np.size(g) == 0:
        return 0.0, 0.0, True
    diff, rel = _rel_steps(g, fds, rtol, scale, noises)
    best = np.argmin(rel, axis=0)
    cols = np.arange(rel.shape[1])
    rel_best = float(np.max(rel[best, cols]))
    if not np.isfinite(rel_best):
        return float("inf"), float("inf"), False
    return float(np.max(diff[best, cols])), rel_best, rel_best <= rtol


def _cancel_floor(dtype_name: str, global_scale: float) -> float:
    """``CANCEL_ULPS * eps(dtype) * global_scale``: how far from 0 rounding leaves an entry whose
    exact value is 0 but which sums terms as large as the rest of the gradient (a bias before
    BatchNorm): there a leaf's own scale is noise too, and only the whole gradient's says what
    "small" means."""
    return CANCEL_ULPS * float(np.finfo(dtype_name).eps) * global_scale


def _autodiff_tolerance(dtype_name: str) -> tuple[float, float]:
    """``(rtol, atol_frac)`` against autodiff in ``dtype_name``."""
    if dtype_name == "float64":
        return TOLERANCES["grad_float64"], ATOL_FRAC
    return TOLERANCES["grad_float32"], ATOL_FRAC_FLOAT32


# --------------------------------------------------------------------------------------------
# Helpers: perturbation (dtypes: _is_float and _cast, from jaxprop.train.precision)


def perturb(tree, rng: np.random.Generator | int = 0, scale: float = PERTURB_SCALE):
    """``tree`` with every floating leaf moved to random, non-special values: non-zero entries
    multiplied by ``exp(scale * N(0, 1))`` (signs kept: a positive scale stays positive, a
    scale of 1 leaves 1), zero entries set to ``scale * rms(leaf) * N(0, 1)`` (``rms`` 1 for an
    all-zero leaf such as a fresh bias). Other leaves are unchanged. ``rng``: a NumPy generator
    or seed (drawn on the host: nothing to compile)."""
    rng = np.random.default_rng(rng)

    def move(a):
        if not _is_float(a) or a.size == 0:
            return a
        v = np.asarray(a, np.float64)
        rms = float(np.sqrt(np.mean(v * v)))
        mul = v * np.exp(scale * rng.standard_normal(v.shape))
        add = scale * (rms if rms > 0 else 1.0) * rng.standard_normal(v.shape)
        return jnp.asarray(np.where(v != 0, mul, add), a.dtype)

    return jax.tree.map(move, tree)


def _host_rng(key) -> np.random.Generator:
    """A NumPy generator seeded from a JAX key (for what is drawn on the host)."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


# --------------------------------------------------------------------------------------------
# Layers at one point: one compiled program per dtype


def x64_for(dtype_name: str | None):
    """``jax.enable_x64(True)`` for ``"float64"`` while x64 is off, else a no-op context."""
    if dtype_name == "float64" and not jax.config.jax_enable_x64:
        return jax.enable_x64(True)
    return contextlib.nullcontext()


def jit_once(fn):
    """``jax.jit(fn)`` for a program that runs once or twice: compiled fast on CPU (as
    ``train/compile.py`` does for tiny trainings), where compiling costs more than running."""
    return jax.jit(fn, compiler_options=FAST_COMPILE if jax.default_backend() == "cpu" else None)


@contextlib.contextmanager
def _forward_errors(where: str, x):
    """A failing forward (the user's code) as one ``ValueError`` naming the layer and input."""
    try:
        yield
    except (BackwardError, ValueError) as e:
        if str(e).startswith(where):
            raise
        raise ValueError(f"{where}: forward failed on an input of shape {tuple(x.shape)}: "
                         f"{e}") from e
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{where}: forward failed on an input of shape {tuple(x.shape)}: "
                         f"{type(e).__name__}: {e}") from e


def _targets(params, x) -> list:
    """``(which, array)`` for every quantity to check: ``(None, x)`` for ``dx`` when ``x`` is
    floating, then ``(i, leaf)`` for every floating leaf ``i`` of ``params``."""
    out = [(None, x)] if _is_float(x) else []
    return out + [(i, a) for i, a in enumerate(jax.tree.leaves(params)) if _is_float(a)]


def _layer_math(layer: Layer, where: str, params, state, x, key, train: bool, noise, *,
                with_fd: bool, fd_eps: float):
    """Inside a trace: the layer's backward and ``jax.vjp`` for the cotangent ``noise["dy"]``,
    and (with ``with_fd``) central differences along the directions ``noise["dirs"]`` (one
    ``(n_dirs, *shape)`` array per quantity).

    Returns ``(names, arrays)``: the quantity names (``dx``, then the floating params leaves)
    and a dict of ``hand``/``ref`` lists and, with ``with_fd``, ``fd``/``dir`` (``(n_q,
    n_dirs)``: the differences and ``<g, u>``), ``h`` (``(n_q,)``) and ``size`` (``sum |dy *
    y|``). Raises :class:`BackwardError` for a malformed backward, ``ValueError`` when the
    forward fails.
    """

    def f(p, x_):
        return layer.forward(p, state, x_, key=key, train=train)[0]

    with _forward_errors(where, x):  # one forward: output, residuals (as aux) and its VJP
        y, vjp_fn, residuals = jax.vjp(
            lambda p, x_: layer.forward(p, state, x_, key=key, train=train)[:2], params, x,
            has_aux=True)
    dy = noise["dy"]
    dparams, dx = checked_backward(layer, where, params, residuals, dy, Spec.of(x))
    ref_dparams, ref_dx = vjp_fn(dy)
    p_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    leaves = [a for _, a in p_paths]
    targets = [which for which, _ in _targets(params, x)]
    names = ["dx" if i is None else _path_str(p_paths[i][0]) or "params" for i in targets]
    hand = [dx if i is None else jax.tree.leaves(dparams)[i] for i in targets]
    ref = [ref_dx if i is None else jax.tree.leaves(ref_dparams)[i] for i in targets]
    # NaN/Inf outputs for finite inputs and params: the forward is at fault, not the backward
    arrays = {"hand": hand, "ref": ref, "bad_y": jnp.sum(~jnp.isfinite(y)) if _is_float(y)
              else jnp.zeros((), jnp.int32), "y_size": jnp.asarray(np.size(y))}
    if not with_fd or not targets:
        return names, arrays

    # Every quantity, direction and step in one lax.map (one copy of the forward in the
    # program): step (n, j, sign, k) moves quantity n by sign * h_n * FD_STEPS[j] * u_k.
    dirs = noise["dirs"]
    n_q, n_dirs, n_s = len(targets), dirs[0].shape[0], len(FD_STEPS)
    hs = [fd_eps * jnp.maximum(1.0, jnp.sqrt(jnp.mean(jnp.square(x if which is None else
                                                                 leaves[which]))))
          for which in targets]
    grid = np.stack(np.meshgrid(np.arange(n_q), np.arange(n_s), [1.0, -1.0], np.arange(n_dirs),
                                indexing="ij"), -1).reshape(-1, 4)
    steps = jnp.asarray(FD_STEPS, x.dtype)

    def phi(row):
        n, j, sign, k = row[0].astype(int), row[1].astype(int), row[2], row[3].astype(int)
        moved = {which: jnp.where(n == m, sign * hs[m] * steps[j], 0) * dirs[m][k]
                 for m, which in enumerate(targets)}
        x_ = x + moved[None] if None in moved else x
        p = treedef.unflatten([a + moved[i] if i in moved else a for i, a in enumerate(leaves)])
        return jnp.sum(dy * f(p, x_))

    values = jax.lax.map(phi, jnp.asarray(grid, x.dtype)).reshape(n_q, n_s, 2, n_dirs)
    arrays.update(
        fd=[(values[n, :, 0] - values[n, :, 1]) / (2 * hs[n] * steps[:, None])
            for n in range(n_q)],  # (n_s, n_dirs) per quantity
        dir=[jnp.sum(u * g, axis=tuple(range(1, u.ndim))) for u, g in zip(dirs, hand)],
        h=hs, size=jnp.sum(jnp.abs(dy * y)))
    return names, arrays


class _Program:
    """Every layer that ``walk(params, state, x, key)`` yields, checked by one compiled program
    (:func:`_layer_math` per layer). What is static -- the order, the layers, the quantity
    names, a malformed backward's message -- is noted while tracing; the arrays come back."""

    def __init__(self, walk, *, train: bool, with_fd: bool, n_dirs: int, fd_eps: float,
                 jitter: float = 0.0):
        self.walk, self.train, self.with_fd, self.jitter = walk, train, with_fd, jitter
        self.n_dirs, self.fd_eps = n_dirs, fd_eps
        self.order: list[str] = []
        self.layers: dict[str, Layer] = {}
        self.names: dict[str, list[str]] = {}
        self.errors: dict[str, str] = {}
        self._jit = jit_once(self._run)

    def _run(self, params, state, x, key, noise):
        self.order, self.layers, self.names, self.errors = [], {}, {}, {}
        out = {}
        for index, layer, p, s, xi, k in self.walk(params, state, x, key):
            self.order.append(index)
            self.layers[index] = layer
            where = label(index, layer.name)
            if self.jitter and _is_float(xi):  # off exact ties and kinks made upstream
                xi = xi + self.jitter * jnp.sqrt(jnp.mean(jnp.square(xi))) * noise[index]["x"]
            try:
                self.names[index], out[index] = _layer_math(
                    layer, where, p, s, xi, k, self.train, noise[index],
                    with_fd=self.with_fd, fd_eps=self.fd_eps)
            except BackwardError as e:
                self.errors[index] = _strip_where(str(e), where)
        return out

    def _shapes(self, params, state, x, key):
        """Per layer: the shape of its output and of each quantity (``jax.eval_shape``)."""
        def shapes(params, state, x, key):
            out = {}
            for index, layer, p, s, xi, k in self.walk(params, state, x, key):
                with _forward_errors(label(index, layer.name), xi):
                    y = layer.forward(p, s, xi, key=k, train=self.train)[0]
                out[index] = {"dy": y, "dirs": [a for _, a in _targets(p, xi)], "x": xi}
            return out

        return jax.eval_shape(shapes, params, state, x, key)

    def _noise(self, rng: np.random.Generator, params, state, x, key):
        """The random cotangents and directions, drawn on the host (N(0, 1)): jax.random
        would cost far more to compile than the whole check."""
        def draw(shape, dtype):
            return np.asarray(rng.standard_normal(shape), dtype)

        return {index: {"dy": draw(s["dy"].shape, s["dy"].dtype),
                        "x": draw(s["x"].shape, s["x"].dtype) if _is_float(s["x"]) else None,
                        "dirs": [draw((self.n_dirs, *a.shape), a.dtype) for a in s["dirs"]]
                        if self.with_fd else []}
                for index, s in self._shapes(params, state, x, key).items()}

    def __call__(self, params, state, x, key, rng: np.random.Generator):
        with jax.default_matmul_precision("highest"):
            noise = self._noise(rng, params, state, x, key)
            return jax.device_get(self._jit(params, state, x, key, noise))


def _strip_where(message: str, where: str) -> str:
    """The message of an error about ``where`` without ``where`` in front (the report's label
    says it already)."""
    if message.startswith(where + ": "):
        return message[len(where) + 2:]
    if message.startswith(where + " > "):
        return "in " + message[len(where) + 3:]
    return message


def _compare(hand, ref, reference: str, dtype_name: str, rtol: float,
             atol_frac: float) -> list[Comparison]:
    refs = [np.asarray(r) for r in ref]
    global_scale = max((float(np.max(np.abs(r))) for r in refs if r.size), default=0.0)
    floor = _cancel_floor(dtype_name, global_scale)
    return [Comparison(reference, *_errors(g, r, rtol, _scale(r, global_scale), floor,
                                           atol_frac=atol_frac), rtol=rtol)
            for g, r in zip(hand, refs)]


def _compare_fd(arrays, rtol: float) -> list[Comparison]:
    if "fd" not in arrays:  # nothing to check
        return []
    eps = float(np.finfo(np.float64).eps)
    rms = [math.sqrt(float(np.mean(np.square(fd[0])))) for fd in arrays["fd"]]
    global_scale = max(rms, default=0.0)
    return [Comparison(FD_REFERENCE, *_errors_steps(
        d, fd, rtol, _scale(np.array([r]), global_scale),
        [FD_NOISE_ULPS * eps * float(arrays["size"]) / (float(h) * s) for s in FD_STEPS]),
        rtol=rtol) for d, fd, h, r in zip(arrays["dir"], arrays["fd"], arrays["h"], rms)]


class _Checker:
    """Checks the layers of a walk at any point: the working-dtype program (``jax.vjp``) and the
    float64 one (``jax.vjp`` and finite differences), each compiled once."""

    def __init__(self, walk, *, dtype, train: bool, fd_rtol: float, fd_eps: float,
                 fd_directions: int, jitter: float = 0.0):
        self.dtype_name = jnp.dtype(dtype).name
        self.fd_rtol = fd_rtol
        settings = dict(train=train, n_dirs=fd_directions, fd_eps=fd_eps, jitter=jitter)
        self.own = None if self.dtype_name == "float64" else _Program(walk, with_fd=False,
                                                                       **settings)
        self.f64 = _Program(walk, with_fd=True, **settings)

    def __call__(self, point: str, params, state, x, key,
                 rng: np.random.Generator) -> list[LayerCheck]:
        passes = []  # (program, arrays, reference name, dtype name, rtol, atol_frac)
        if self.own is not None:
            cast = lambda tree: _cast(tree, self.dtype_name)  # noqa: E731
            out = self.own(cast(params), cast(state), cast(x), key, rng)
            passes.append((self.own, out, f"jax.vjp {self.dtype_name}", self.dtype_name,
                           *_autodiff_tolerance(self.dtype_name)))
        with jax.enable_x64(True):
            cast = lambda tree: _cast(tree, jnp.float64)  # noqa: E731
            out64 = self.f64(cast(params), cast(state), cast(x), key, rng)
        passes.append((self.f64, out64, "jax.vjp float64", "float64",
                       *_autodiff_tolerance("float64")))
        checks = []
        for index in self.f64.order:
            layer = self.f64.layers[index]
            error = next((prog.errors[index] for prog, *_ in passes if index in prog.errors),
                         None)
            if error is None:
                error = _forward_not_finite(passes, index)
            if error is not None:
                checks.append(LayerCheck(index, layer.name, point, error=error))
                continue
            columns = [_compare(out[index]["hand"], out[index]["ref"], *rest)
                       for _, out, *rest in passes]
            columns.append(_compare_fd(out64[index], self.fd_rtol))
            names, hand = self.f64.names[index], out64[index]["hand"]
            checks.append(LayerCheck(index, layer.name, point, tuple(
                QuantityCheck(name, tuple(np.shape(g)), self.dtype_name,
                              tuple(column[i] for column in columns))
                for i, (name, g) in enumerate(zip(names, hand)))))
        return checks


def _forward_not_finite(passes, index) -> str | None:
    """What to say when a layer's forward gave NaN/Inf from finite inputs and params (in the
    first pass, working dtype or float64, where it did), else ``None``."""
    for _, out, _, dtype_name, *_ in passes:
        bad = int(out[index]["bad_y"])
        if bad:
            return (f"its forward gives {bad} NaN/Inf value(s) of {int(out[index]['y_size'])} "
                    f"in {dtype_name} from finite inputs and params; fix the forward first "
                    "(the backward was not judged)")
    return None


def _validate_common(dtype, fd_directions: int, batch=None, *, what: str = "") -> str:
    """The working dtype's name, after checking the arguments every check takes: ``dtype``
    (float32 or float64; ``what`` says where it came from when not given), ``fd_directions``
    and, unless ``None``, ``batch``."""
    name = jnp.dtype(dtype).name
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {name}{what}")
    if not is_int(fd_directions) or fd_directions < 1:
        raise ValueError(f"fd_directions must be a positive int, got {fd_directions!r}")
    if batch is not None and (not is_int(batch) or batch < 1):
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    return name


def _refuse_non_finite(tree, name: str, what: str) -> None:
    """Raise ``ValueError`` when a floating leaf of ``tree`` holds NaN/Inf, naming the leaf by
    its path (``name`` + ``params[0]['W']``'s keys) and counting the values: at such a point
    every comparison fails with an infinite error that explains nothing. ``what`` is the
    subject of the sentence (``"given params"``). Traced leaves are not checked."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.core.Tracer):
            continue
        a = leaf if hasattr(leaf, "dtype") else np.asarray(leaf)
        if not jnp.issubdtype(a.dtype, jnp.inexact):
            continue
        bad = int(np.sum(~np.isfinite(np.asarray(a))))
        if bad:
            raise ValueError(
                f"the {what} contain NaN/Inf: {name}{jax.tree_util.keystr(path)} has {bad} "
                f"non-finite value(s) of {a.size}; gradients cannot be checked at them")


# --------------------------------------------------------------------------------------------
# Input draws: where check_layer looks


def _kinks(rng: np.random.Generator, shape) -> np.ndarray:
    """Entries near the kinks and saturation points of common activations, in equal shares:
    ``±U(1e-3, 0.1)`` (ReLU and friends at 0, never exactly on it), ``±U(4, 8)`` (sigmoid and
    tanh saturating), ``-U(10, LARGE)`` (large negatives: exp underflowing, a softplus's tail,
    asymptotic branches past -20 or -50; ``LARGE`` = 80 keeps ``exp(-x)`` finite in float32)
    and N(0, 1). Large positives would saturate a softmax over the features in every example,
    where an honest backward's rounding (a sum that cancels) exceeds any tolerance."""
    sign = rng.choice([-1.0, 1.0], size=shape)
    groups = [sign * rng.uniform(1e-3, 0.1, shape), sign * rng.uniform(4.0, 8.0, shape),
              -rng.uniform(10.0, LARGE, shape), rng.standard_normal(shape)]
    which = rng.integers(0, len(groups), size=shape)
    return np.choose(which, groups)


@dataclasses.dataclass(frozen=True)
class Draw:
    """Where :func:`check_layer` draws inputs: a short ``name`` (``LayerCheck.draw``; reports
    say "at the random params, {name} inputs"), how (``sample(rng, shape)``, or ``array``:
    given inputs) and how widely params are perturbed for it (:func:`perturb`'s ``scale``)."""

    name: str
    sample: object = None  # (np.random.Generator, shape) -> np.ndarray
    array: object = None
    perturb_scale: float = PERTURB_SCALE


# the default draws, in order: check_layer(draws=...) picks among them by name
DRAWS: dict[str, Draw] = {
    "normal": Draw("normal", lambda rng, shape: rng.standard_normal(shape)),
    "wide": Draw(f"wide x{WIDE_SCALE:g}",
                 lambda rng, shape: WIDE_SCALE * rng.standard_normal(shape), perturb_scale=1.0),
    "kinks": Draw("near-kink", _kinks),
}


def input_draw(spec) -> Draw:
    """The user's draw: a scale ``S`` (N(0, S^2)), a range ``(lo, hi)`` (uniform) or an array
    of inputs ``(n, *in_shape)``; ``ValueError`` for anything else."""
    if is_number(spec):
        scale = check_number("inputs (a scale)", spec, minimum=0.0)
        if scale == 0.0:
            raise ValueError("inputs (a scale) must be > 0, got 0")
        return Draw(f"scale {scale:g}",
                    lambda rng, shape: scale * rng.standard_normal(shape))
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and all(map(is_number, spec)):
        lo, hi = (check_number("inputs (a range)", v) for v in spec)
        if not lo < hi:
            raise ValueError(f"inputs (a range) must be (lo, hi) with lo < hi, got {spec!r}")
        return Draw(f"[{lo:g}, {hi:g}]",
                    lambda rng, shape: rng.uniform(lo, hi, shape))
    if isinstance(spec, (np.ndarray, jax.Array)):
        return Draw("given", array=spec)
    raise ValueError(f"inputs must be a scale (a number), a range (lo, hi) or an array of "
                     f"inputs, got {type(spec).__name__}")


def _draws(draws, inputs) -> list[Draw]:
    """The draws :func:`check_layer` uses: the named defaults, then the user's."""
    if isinstance(draws, str):
        draws = (draws,)
    out = [lookup(DRAWS, name, "input draw") for name in draws]
    if inputs is not None:
        out.append(input_draw(inputs))
    if not out:
        raise ValueError("nothing to draw inputs from: give draws or inputs")
    return out


def draw_inputs(draw: Draw, host: np.random.Generator, batch: int, in_shape) -> jax.Array:
    """One draw's inputs, ``(batch, *in_shape)`` (given ones: checked against ``in_shape``)."""
    if draw.array is None:
        return jnp.asarray(draw.sample(host, (batch, *in_shape)), jnp.float32)
    x = draw.array
    if tuple(np.shape(x)[1:]) != tuple(in_shape) or not np.shape(x)[0]:
        raise ValueError(f"inputs must have shape (n, *in_shape) = (n, "
                         f"{', '.join(map(str, in_shape))}), got {tuple(np.shape(x))}")
    return jnp.asarray(x)


def check_layer(
    layer: Layer,
    in_shape: Sequence[int],
    *,
    batch: int = DEFAULT_BATCH,
    key=None,
    dtype=jnp.float32,
    train: bool = True,
    params=None,
    state=None,
    x=None,
    inputs=None,
    draws: Sequence[str] = tuple(DRAWS),
    perturb_params: bool = True,
    fd_rtol: float = TOLERANCES["fd"],
    fd_eps: float = FD_EPS,
    fd_directions: int = FD_DIRECTIONS,
) -> LayerReport:
    """Check one layer's ``backward`` against ``jax.vjp`` of its ``forward`` (in ``dtype`` and in
    float64) and float64 finite differences, for ``dx`` and every ``dparams`` leaf.

    Once per input draw (:data:`DRAWS`: ``normal`` N(0, 1), ``wide`` N(0, 10^2) and ``kinks``,
    values near the kinks and saturation points of common activations; then the user's
    ``inputs``), each with ``x: (batch, *in_shape)`` and params and state from ``layer.init``
    perturbed afresh (:func:`perturb`; more widely for the wide draw) unless
    ``perturb_params=False`` (given ones are used as they are); a random cotangent; ``key``
    (default ``jax.random.key(0)``) fixes the forward's key (a Dropout mask) and everything
    drawn. A given ``x`` replaces the draws. Each :class:`LayerCheck` names its draw.

    Args:
      layer: any :class:`~jaxprop.Layer` (a model checks as one layer: see
        :func:`check_gradients` to check it layer by layer).
      in_shape: one example's shape, e.g. ``(8,)``.
      batch: examples per draw (> 1 finds bugs that only show across a batch).
      key, dtype, train: PRNG key, working dtype (float32 or float64), training mode.
      params, state, x: check at these instead of random ones.
      inputs: one more draw: a scale ``S`` (N(0, S^2)), a range ``(lo, hi)`` (uniform) or an
        array ``(n, *in_shape)``.
      draws: the default draws to use, by name (``("normal",)``: N(0, 1) only).
      perturb_params, fd_rtol, fd_eps, fd_directions: see the module docstring.

    Returns:
      A :class:`LayerReport`. A malformed backward gives a failing report whose verdict names
      the problem; a forward that fails on this input raises ``ValueError``.
    """
    if not isinstance(layer, Layer):
        raise ValueError(f"check_layer takes a Layer, got {type(layer).__name__}")
    dtype_name = _validate_common(dtype, fd_directions, batch if x is None else None)
    in_shape = _shape(in_shape)
    if layer.integer_inputs and inputs is not None:
        raise ValueError(f"inputs= draws float inputs, but {layer.name} takes token ids "
                         f"(0..{layer.integer_inputs - 1}): leave it out (ids are drawn "
                         "uniformly) or give x=")
    plan = [None] if x is not None else _draws(draws, inputs)
    key = jax.random.key(0) if key is None else key
    k_init, k_fwd = jax.random.split(key)
    host = _host_rng(key)
    if x is None and params is None:  # before anything is drawn or initialised
        check_fits(layer, in_shape, batch, fd_directions)
    p0, s0, point = _layer_point(layer, in_shape, k_init, params, state, perturb_params)
    _refuse_non_finite(p0, "params", point)
    _refuse_non_finite(s0, "state", "state's arrays")
    checker = _Checker(lambda p, s, x_, k: [("", layer, p, s, x_, k)], dtype=dtype, train=train,
                       fd_rtol=fd_rtol, fd_eps=fd_eps, fd_directions=fd_directions)
    checks = []
    for draw in plan:
        xd = (x if draw is None else _random_ids(layer, (batch, *in_shape), host)
              if layer.integer_inputs else draw_inputs(draw, host, batch, in_shape))
        _refuse_non_finite(xd, "x", "inputs")
        scale = PERTURB_SCALE if draw is None else draw.perturb_scale
        p = perturb(p0, host, scale) if params is None and perturb_params else p0
        s = perturb(s0, host, scale) if state is None and perturb_params else s0
        checks += [dataclasses.replace(lc, draw=None if draw is None else draw.name)
                   for lc in checker(point, p, s, xd, k_fwd, host)]
    return LayerReport(tuple(checks), dtype_name, {
        "in_shape": in_shape, "batch": int(np.shape(x)[0]) if x is not None and np.ndim(x)
        else batch, "train": train})


def check_fits(layer: Layer, in_shape, batch: int, fd_directions: int = FD_DIRECTIONS) -> None:
    """:class:`~jaxprop.train.memory.InsufficientMemory` when checking ``layer`` (or a model) on
    ``batch`` examples of ``in_shape`` cannot fit: the params, inputs and what the forward keeps,
    in float64 and the working dtype, and one copy per finite-difference direction (from
    shapes alone; a layer whose ``init`` fails is left to the check to report)."""
    try:
        params, state, _ = jax.eval_shape(lambda: layer.init(jax.random.key(0), in_shape))
        x = jax.ShapeDtypeStruct((batch, *in_shape), _input_dtype(layer, jnp.float32))
        kept = jax.eval_shape(lambda p, s, x_: layer.forward(p, s, x_)[:2], params, state, x)
    except Exception:  # noqa: BLE001 - the check itself names what is wrong with the layer
        return
    # float32 shapes, counted twice over: as float64 (and once more in the working dtype)
    per_copy = 3 * (nbytes(params) + nbytes(state) + nbytes(x) + nbytes(kept))
    check_memory(per_copy * (3 + fd_directions), f"checking {layer.name} on {batch} "
                 f"examples of shape {tuple(in_shape)}",
                 "check a smaller layer or input (--in-shape) or a smaller batch (--batch)")


def _layer_point(layer: Layer, in_shape, key, params, state, perturb_params: bool):
    """``(params, state, point)`` for :func:`check_layer`: the given ones, else ``layer.init``'s
    (perturbed per draw with ``perturb_params``); ``point`` says which params (``"given
    params"``)."""
    try:
        p0, s0, out_shape = layer.init(key, in_shape)
    except Exception as e:  # noqa: BLE001 - the user's init: name the layer and the shape
        raise ValueError(f"{layer.name}: init failed for in_shape {in_shape}: {e}") from e
    _check_forward_shape(layer, p0, s0, in_shape, out_shape, key)
    point = "given params" if params is not None else (
        "random params" if perturb_params else "initial params")
    return (p0 if params is None else params), (s0 if state is None else state), point


def _check_forward_shape(layer: Layer, params, state, in_shape, out_shape, key) -> None:
    """``ValueError`` when the forward's output shape is not the one ``init`` said (a bug in
    the forward or in init, not in the backward)."""
    dtype = next((a.dtype for a in jax.tree.leaves(params) if _is_float(a)), jnp.float32)
    x = jax.ShapeDtypeStruct((2, *in_shape), _input_dtype(layer, dtype))
    with _forward_errors(layer.name, x):
        y = jax.eval_shape(lambda p, s, x_: layer.forward(p, s, x_, key=key)[0],
                           params, state, x)
    if tuple(y.shape[1:]) != tuple(out_shape):
        raise ValueError(f"{layer.name}: forward gives examples of shape {tuple(y.shape[1:])}, "
                         f"but init said {tuple(out_shape)}; fix init or forward first (the "
                         "backward was not judged)")


def _input_dtype(layer: Layer, dtype):
    """The dtype of ``layer``'s inputs: int32 for a layer on integer ids, else ``dtype``."""
    return jnp.int32 if layer.integer_inputs else dtype


def _random_ids(layer: Layer, shape, host):
    """Inputs of ``shape`` for a layer on ids (an Embedding): integer ids drawn uniformly from
    ``0..integer_inputs-1`` (float inputs come from the draws: :func:`draw_inputs`)."""
    return jnp.asarray(host.integers(0, layer.integer_inputs, shape), jnp.int32)


def _shape(in_shape) -> tuple[int, ...]:
    if isinstance(in_shape, (int, np.integer)):
        in_shape = (in_shape,)
    try:
        shape = tuple(int(s) for s in in_shape)
        bad = any(s < 1 or s != t for s, t in zip(shape, in_shape))
    except (TypeError, ValueError):
        bad = True
    if bad:
        raise ValueError(f"in_shape must be positive ints, e.g. (8,), got {in_shape!r}")
    return shape


# --------------------------------------------------------------------------------------------
# Losses


def _loss_layers(loss: Loss) -> tuple[Layer, Layer | None]:
    """A loss as layers to check: ``y -> value(y, t)`` with ``grad`` as its backward (``t`` in
    the state), and ``t -> value(y, t)`` with ``target_grad`` (``y`` in the state)."""

    def init(key, in_shape):
        return (), (), ()

    def fwd_y(params, state, y, *, key=None, train=True):
        return loss.value(y, state["t"]), (y, state["t"]), state

    def fwd_t(params, state, t, *, key=None, train=True):
        return loss.value(state["y"], t), (state["y"], t), state

    by_y = Layer(init, fwd_y, lambda p, r, g: ((), g * loss.grad(*r)), name=f"{loss.name} grad")
    by_t = None if loss.target_grad is None else Layer(
        init, fwd_t, lambda p, r, g: ((), g * loss.target_grad(*r)),
        name=f"{loss.name} target_grad")
    return by_y, by_t


def check_loss(loss: str | Loss, out_shape: Sequence[int] = (3,), *, batch: int = 4, key=None,
               dtype=jnp.float32, fd_rtol: float = TOLERANCES["fd"], fd_eps: float = FD_EPS,
               fd_directions: int = FD_DIRECTIONS) -> LayerReport:
    """Check a loss's hand-written ``grad`` (and ``target_grad``) against autodiff and differences.

    Against ``jax.vjp`` of its ``value`` and float64 finite differences, as :func:`check_layer`
    does; ``target_grad`` only when the loss has one. Predictions ``y: (batch, *out_shape)`` are
    N(0, 1), or in ``[0.05, 0.95]`` for a loss on probabilities; targets suit the loss (one-hot
    for a categorical loss, ``[0, 1]`` for a binary one).

    Args:
      loss: a loss name or :class:`~jaxprop.Loss`.
      out_shape: one example's prediction shape, e.g. ``(3,)``.
      batch: examples in the batch.
      key: PRNG key that fixes everything drawn (default ``jax.random.key(0)``).
      dtype: the working dtype, float32 or float64.
      fd_rtol: see the module docstring.
      fd_eps: see the module docstring.
      fd_directions: see the module docstring.

    Returns:
      A :class:`LayerReport` (quantities ``dL/dy`` and, with a ``target_grad``, ``dL/dt``).
    """
    from jaxprop.tools.presets import make_data  # targets that suit the loss

    loss = get_loss(loss)
    dtype_name = _validate_common(dtype, fd_directions, batch)
    out_shape = _shape(out_shape)
    key = jax.random.key(0) if key is None else key
    host = _host_rng(key)
    shape = (batch, *out_shape)
    y = jnp.asarray(host.uniform(0.05, 0.95, shape) if loss.input_range is not None
                    else host.standard_normal(shape), jnp.float32)
    _, t = make_data(key, loss, out_shape, out_shape, batch, jnp.float32)
    by_y, by_t = _loss_layers(loss)

    def walk(params, state, x, key):
        yield "dL/dy", by_y, (), {"t": state["t"]}, x, None
        if by_t is not None:
            yield "dL/dt", by_t, (), {"y": x}, state["t"], None

    checker = _Checker(walk, dtype=dtype, train=True, fd_rtol=fd_rtol, fd_eps=fd_eps,
                       fd_directions=fd_directions)
    checks = checker("random predictions and targets", (), {"t": t}, y, None, host)
    # each "layer" checks one quantity, its input: named dL/dy or dL/dt rather than dx
    checks = [dataclasses.replace(lc, quantities=tuple(
        dataclasses.replace(q, name=lc.index) for q in lc.quantities)) for lc in checks]
    return LayerReport(tuple(checks), dtype_name, {"out_shape": out_shape, "batch": batch})


# --------------------------------------------------------------------------------------------
# A model: layer by layer, then end to end


def layer_points(model: Model, params, state, x, key, train, prefix: str = "", trace=None):
    """``(index, layer, params, state, x, key)`` for every layer at the input that reaches it,
    recursing into nested models (index ``"2.1"``). ``trace(model, params, state, x, key)``
    gives a model's per-layer outputs (default: its ``forward_trace``, op by op)."""
    if trace is None:
        outputs = model.forward_trace(params, state, x, key=key, train=train)[0]
    else:
        outputs = trace(model, params, state, x, key)
    for i, (layer, p, s, k) in enumerate(zip(model.layers, params, model.layer_states(state),
                                              model.layer_keys(key))):
        xi = x if i == 0 else outputs[i - 1]
        if isinstance(layer, Model):
            yield from layer_points(layer, p, s, xi, k, train, f"{prefix}{i}.", trace)
        else:
            yield f"{prefix}{i}", layer, p, s, xi, k


def check_model_layers(model: Model, params, x, *, state=None, key=None, train: bool = True,
                       perturb_params: bool = True, seed: int = 0, dtype=None,
                       fd_rtol: float = TOLERANCES["fd"], fd_eps: float = FD_EPS,
                       fd_directions: int = FD_DIRECTIONS) -> tuple[LayerCheck, ...]:
    """Every layer of ``model`` checked on the activations that reach it (forward order).

    At ``params`` and, with ``perturb_params``, again at perturbed params; nested models are
    checked layer by layer. Each layer's floating input is moved by ``JITTER`` (1e-3) times its
    root mean square times N(0, 1): the zeros a ReLU hands a max-pool are exact ties, where the
    hand-written and autodiff gradients are different valid choices; the jitter takes the check
    off such points without moving it anywhere else that matters.

    Args:
      model: a :class:`~jaxprop.Model`.
      params: its params.
      x: the inputs, ``(batch, *in_shape)``.
      state: the model's state, or ``None``.
      key: the forward key (Dropout), or ``None``.
      train: training mode (default) or evaluation mode.
      perturb_params: check again at perturbed params (:func:`perturb`).
      seed: draws the perturbation, cotangents, directions and jitter.
      dtype: the working dtype; defaults to the params' (see :func:`check_gradients`), or
        ``x``'s when no param is floating.
      fd_rtol: see the module docstring.
      fd_eps: see the module docstring.
      fd_directions: see the module docstring.

    Returns:
      one :class:`LayerCheck` per layer and point, in forward order (the given params' first).
    """
    if dtype is None:
        leaves = [a for a in jax.tree.leaves(params) if _is_float(a)]
        dtype = jnp.result_type(*leaves) if leaves else jnp.asarray(x).dtype
    rng = np.random.default_rng(seed)
    points = [("given params", params)]
    if perturb_params:
        points.append(("perturbed params", perturb(params, seed)))
    checker = _Checker(lambda p, s, x_, k: layer_points(model, p, s, x_, k, train),
                       dtype=dtype, train=train, fd_rtol=fd_rtol, fd_eps=fd_eps,
                       fd_directions=fd_directions, jitter=JITTER)
    checks = []
    for point, p in points:
        checks += checker(point, p, state, x, key, rng)
    return tuple(checks)


def central_differences(loss_fn, params, coords_l: list[np.ndarray], h: float,
                         steps: Sequence[float] = (1.0,)) -> list:
    """Central differences of ``loss_fn(params)`` w.r.t. the given coordinates of each leaf
    (``jax.tree.leaves`` order), with each step ``h * steps[j]``: ``(len(steps), n_coords)``
    per leaf. One compiled program: a ``lax.map`` per leaf, perturbing that leaf
    only, in chunks that keep ``FD_MEMORY`` bytes of perturbed copies alive."""
    leaves, treedef = jax.tree.flatten(params)

    def run(leaves, coords):  # leaves as arguments: as constants they would slow compiling
        def central(i, c):
            def at(step):
                moved = leaves[i].ravel().at[c].add(step).reshape(leaves[i].shape)
                return loss_fn(treedef.unflatten(leaves[:i] + [moved] + leaves[i + 1:]))

            return jnp.stack([(at(h * s) - at(-h * s)) / (2 * h * s) for s in steps])

        return [jax.lax.map(functools.partial(central, i), cs, batch_size=int(max(
            1, min(128, FD_MEMORY // max(1, leaves[i].nbytes))))) if cs.size else cs
            for i, cs in enumerate(coords)]

    out = jit_once(run)(leaves, [jnp.asarray(c) for c in coords_l])
    return [np.asarray(o, np.float64).reshape(-1, len(steps)).T for o in out]


def _scatter(values, at, coords) -> np.ndarray:
    """``values`` (``(n_steps, len(at))``, at coordinates ``at``) laid out over ``coords``, NaN
    where not evaluated."""
    out = np.full((values.shape[0], coords.size), np.nan)
    out[:, np.searchsorted(coords, at)] = values
    return out


def _model_state(model: Model, state, x):
    """The state to check at: as given, else a fresh one when the model has state."""
    if state is not None:
        return state
    in_shape = model.in_shape or tuple(np.shape(x)[1:])
    abstract = jax.eval_shape(lambda k: model.init(k, in_shape)[1], jax.random.key(0))
    return model.init(jax.random.key(0), in_shape)[1] if jax.tree.leaves(abstract) else None


def check_gradients(
    model: Model,
    loss: str | Loss,
    params,
    x,
    t,
    *,
    state=None,
    key=None,
    train: bool = True,
    perturb_params: bool = True,
    grad_rtol: float | None = None,
    fd_rtol: float = TOLERANCES["fd"],
    fd_eps: float = FD_EPS,
    max_fd_coords: int = MAX_FD_COORDS,
    fd_directions: int = FD_DIRECTIONS,
    seed: int = 0,
    dtype=None,
    order: int = 1,
) -> GradCheckReport:
    """Check every layer's backward, then the gradient of ``loss(model(params, x), t)``.

    Per layer (:func:`check_model_layers`): ``jax.vjp`` in the params' dtype and float64, and
    float64 finite differences along random directions, on the activations that reach the
    layer, at ``params`` and (``perturb_params``) at perturbed params. End to end, leaf by leaf:
    ``jax.grad`` in the params' dtype and float64 central differences (see the module
    docstring). ``seed`` draws the cotangents, directions, perturbation and sampled coordinates.

    Args:
      model: a :class:`~jaxprop.Model` (``jp.serial``, ``jp.mlp``); check a single layer with
        :func:`check_layer`.
      loss: a loss name or :class:`~jaxprop.Loss`.
      params, x, t: parameters, inputs ``(batch, *in_shape)`` and targets.
      state, key, train: the model's state (default: a fresh one if it has state), the forward
        key (default ``jax.random.key(seed)``; Dropout) and the mode.
      perturb_params, grad_rtol, fd_rtol, fd_eps, max_fd_coords, fd_directions: see above;
        ``grad_rtol`` defaults to ``TOLERANCES["grad_float32"]`` or ``["grad_float64"]``.
      seed: see above.
      dtype: the working dtype, float32 or float64: params and state are cast to it (and
        ``x`` and ``t`` follow the params). Default: the params' dtype (``x``'s without
        params), which must then be float32 or float64.
      order: 2 also checks second derivatives through every backward and the loss's
        Hessian-vector products (:func:`jaxprop.check_hvp`).

    Returns:
      A :class:`GradCheckReport` (with ``order=2``, a
      :class:`~jaxprop.tools.hvpcheck.SecondOrderReport` holding it and the second-order one);
      its verdict names the first disagreeing layer by index and name. Raises ``ValueError``
      for bad input (as :func:`jaxprop.value_and_grad`).
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    loss = get_loss(loss)
    if not isinstance(model, Model):
        raise ValueError(f"check_gradients takes a model (jp.serial, jp.mlp), got "
                         f"{type(model).__name__}; check a single layer with jp.check_layer")
    if max_fd_coords < 1:
        raise ValueError(f"max_fd_coords must be >= 1, got {max_fd_coords}")
    given = dtype is not None
    if not given:
        dtype = params_dtype(params)  # None without params: x's, once validated below
    # checked before anything compiles (a bfloat16 model fails here, not inside NumPy)
    dtype_name = None if dtype is None else _validate_common(
        dtype, fd_directions, what="" if given else " (the params' dtype)")
    with x64_for(dtype_name):  # dtype=float64 asked for: float64 arrays need x64
        params, x, t, state, dtype_name = _prepare(model, loss, params, x, t, state,
                                                   dtype_name if given else None,
                                                   dtype_name, fd_directions)
        report = _check_gradients(model, loss, params, x, t, state=state, key=key, train=train,
                                  perturb_params=perturb_params, grad_rtol=grad_rtol,
                                  fd_rtol=fd_rtol, fd_eps=fd_eps, max_fd_coords=max_fd_coords,
                                  fd_directions=fd_directions, seed=seed, dtype_name=dtype_name)
        if order == 2:
            from jaxprop.tools.hvpcheck import SecondOrderReport, check_hvp  # imports this one

            report = SecondOrderReport(report, check_hvp(
                model, loss, params, x, t, state=state, key=key, train=train, seed=seed))
        return report


def _prepare(model, loss, params, x, t, state, cast_to, dtype_name, fd_directions):
    """:func:`check_gradients`'s arguments checked: ``(params, x, t, state, dtype_name)``.

    Args:
      model, loss, params, x, t, state: as given to :func:`check_gradients`.
      cast_to: the dtype name asked for (params and state are cast to it), or ``None``.
      dtype_name: the working dtype's name, or ``None`` to take ``x``'s.
      fd_directions: checked with ``x``'s dtype when ``dtype_name`` is ``None``.

    Returns:
      params and state (cast, finite), ``x`` and ``t`` validated, the state to use (a fresh
      one when none is given and the model has state) and the working dtype's name.
    """
    if cast_to is not None:
        params = _cast(params, cast_to)
    _refuse_non_finite(params, "params", "given params")
    x, t = validate_data(params, x, t, loss=loss, model=model)
    if dtype_name is None:
        dtype_name = _validate_common(x.dtype, fd_directions, what=" (x's dtype)")
    state = _model_state(model, state, x)
    if cast_to is not None:
        state = _cast(state, cast_to)
    _refuse_non_finite(state, "state", "state's arrays")
    return params, x, t, state, dtype_name


def _check_gradients(model, loss, params, x, t, *, state, key, train, perturb_params,
                     grad_rtol, fd_rtol, fd_eps, max_fd_coords, fd_directions, seed,
                     dtype_name) -> GradCheckReport:
    """:func:`check_gradients` once its arguments are validated (``state``: the one to use)."""
    default_rtol, grad_atol_frac = _autodiff_tolerance(dtype_name)
    grad_rtol = default_rtol if grad_rtol is None else grad_rtol
    key = jax.random.key(seed) if key is None else key
    run = dict(state=state, key=key, train=train)

    try:  # validates shapes and every layer's backward output before the slow part
        hand = value_and_grad(model, loss, params, x, t, **run)[1]
        e2e_error = None
    except BackwardError as e:
        e2e_error = str(e)
    layers = check_model_layers(model, params, x, state=state, key=key, train=train,
                                perturb_params=perturb_params, seed=seed, dtype=dtype_name,
                                fd_rtol=fd_rtol, fd_eps=fd_eps, fd_directions=fd_directions)
    common = dict(dtype=dtype_name, grad_rtol=grad_rtol, fd_rtol=fd_rtol, atol_frac=ATOL_FRAC,
                  max_fd_coords=max_fd_coords, layers=layers,
                  grad_atol_frac=grad_atol_frac, cancel_ulps=CANCEL_ULPS,
                  settings={"seed": seed, "loss": loss.name, "model": model.describe(),
                            "train": train, "perturb_params": perturb_params})
    if e2e_error is not None:
        return GradCheckReport(leaves=(), end_to_end_error=e2e_error, **common)
    leaves = _end_to_end(model, loss, params, x, t, hand, run, grad_rtol=grad_rtol,
                         grad_atol_frac=grad_atol_frac, fd_rtol=fd_rtol, fd_eps=fd_eps,
                         max_fd_coords=max_fd_coords, seed=seed)
    return GradCheckReport(leaves=leaves, **common)


def _end_to_end(model, loss, params, x, t, hand, run, *, grad_rtol, grad_atol_frac, fd_rtol,
                fd_eps, max_fd_coords, seed):
    """Per-leaf :class:`LeafCheck` of the hand-written gradient ``hand`` against ``jax.grad``
    and float64 central differences."""
    names = leaf_names(model, params)

    def ref_loss(p, x, t, state):
        return loss.value(model.forward(p, state, x, key=run["key"], train=run["train"])[0], t)

    with jax.default_matmul_precision("highest"):
        ref = jit_once(jax.grad(ref_loss))(params, x, t, run["state"])
        hand_l = [np.asarray(a) for a in jax.tree.leaves(hand)]
        ref_l = [np.asarray(a) for a in jax.tree.leaves(ref)]
        with jax.enable_x64(True):
            to64 = lambda tree: _cast(tree, jnp.float64)  # noqa: E731
            p64, x64, t64, s64 = to64(params), to64(x), to64(t), to64(run["state"])
            value64, hand64 = jit_once(functools.partial(
                loss_and_grad_fn(model, loss), train=run["train"]))(p64, x64, t64, state=s64,
                                                                    key=run["key"])
            hand64_l = [np.asarray(a) for a in jax.tree.leaves(hand64)]
            fd_noise = FD_NOISE_ULPS * float(np.finfo(np.float64).eps) * (
                1.0 + abs(float(value64))) / fd_eps
            rng = np.random.default_rng(seed)
            coords_l = [np.arange(leaf.size) if leaf.size <= max_fd_coords else
                        np.sort(rng.choice(leaf.size, size=max_fd_coords, replace=False))
                        for leaf in jax.tree.leaves(p64)]
            loss64 = lambda p: ref_loss(p, x64, t64, s64)  # noqa: E731
            fd_l = central_differences(loss64, p64, coords_l, fd_eps)
            global_fd = max((float(np.max(np.abs(f))) for f in fd_l if f.size), default=0.0)
            noises = [fd_noise / s for s in FD_STEPS]
            # coordinates that disagree at h: again at the smaller steps (a kink crossed?)
            again = [coords_l[i][_rel_steps(g.ravel()[c], f, fd_rtol,
                                            _scale(f, global_fd), noises[:1])[1][0] > fd_rtol]
                     for i, (g, f, c) in enumerate(zip(hand64_l, fd_l, coords_l))]
            if len(FD_STEPS) > 1 and any(a.size for a in again):
                smaller = central_differences(loss64, p64, again, fd_eps, FD_STEPS[1:])
            else:
                smaller = [np.zeros((len(FD_STEPS) - 1, a.size)) for a in again]
            fd_l = [np.concatenate([f, _scatter(sm, a, c)]) for f, sm, a, c in
                    zip(fd_l, smaller, again, coords_l)]

    global_ref = max((float(np.max(np.abs(r))) for r in ref_l if r.size), default=0.0)
    checks = []
    for name, g, r, g64, fd, coords in zip(names, hand_l, ref_l, hand64_l, fd_l, coords_l):
        ga, gr, gok = _errors(g, r, grad_rtol, _scale(r, global_ref),
                              _cancel_floor(str(g.dtype), global_ref), atol_frac=grad_atol_frac)
        fa, fr, fok = _errors_steps(g64.ravel()[coords], fd, fd_rtol, _scale(fd[0], global_fd),
                                    noises)
        checks.append(LeafCheck(
            name=name, shape=tuple(int(s) for s in g.shape), dtype=str(g.dtype),
            grad_abs_err=ga, grad_rel_err=gr, grad_ok=gok, fd_abs_err=fa, fd_rel_err=fr,
            fd_ok=fok, fd_coords=int(coords.size)))
    return tuple(checks)
