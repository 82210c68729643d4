"""Second order: forward mode through the hand-written backward, checked.

A backward pass can be right in value and still have a wrong derivative (a factor that depends
on ``x`` wrapped in ``jax.lax.stop_gradient``, a ``custom_jvp`` with a wrong rule inside it):
first-order checks cannot see it, but Hessian-vector products, Newton steps and meta-gradients
through :func:`jaxprop.as_jax_function` inherit it. :func:`check_hvp` checks it:

* **per layer** -- the layer's ``backward`` as a function ``(params, x, dy) -> (dparams, dx)``
  (residuals from its own forward), differentiated by ``jax.jvp`` along random directions, vs
  ``jax.jvp`` of ``jax.vjp`` of its ``forward``; on the activations that reach it (moved by
  ``JITTER`` of their size, off exact ties), so a wrong layer is named;
* **end to end** -- ``H v``, the Hessian of the loss w.r.t. the params times random ``v``, as
  ``jax.jvp`` of jaxprop's gradient (:func:`jaxprop.hvp`) vs ``jax.jvp(jax.grad(loss))``.

Each in the working dtype and in float64, and in float64 against central differences of the
hand-written function itself, ``(B(q + h u) - B(q - h u)) / 2h`` at ``h`` and ``h / 100``
(the better of the two: a step across a ReLU's kink spoils a difference). One error measure,
read as at first order (an error of at most 1 agrees)::

    error = max_i |hand_i - ref_i| / (rtol * max(max_i |ref_i|, ATOL_FRAC * largest |ref| of the check))

per quantity (a leaf of ``dparams``, ``dx``, a leaf of ``H v``), with ``rtol`` the reference's
(:data:`TOLERANCES`: 1e-3 in float32, 1e-8 in float64, 1e-5 for finite differences).
"""

from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
import numpy as np

from jaxprop.core.backprop import loss_and_grad_fn
from jaxprop.core.checks import params_dtype, validate_data
from jaxprop.core.losses import Loss, get_loss
from jaxprop.core.network import Model
from jaxprop.tools.gradcheck import jit_once, layer_points, leaf_names, x64_for
from jaxprop.tools.gradcheck_report import fit
from jaxprop.train.precision import is_float

TOLERANCES = {"float32": 1e-3, "float64": 1e-8, "fd": 1e-5}
ATOL_FRAC = 1e-2
DIRECTIONS = 2
FD_H = 1e-5  # relative to max(1, rms) of the point
JITTER = 1e-3
FD_REFERENCE = "finite differences float64"
_LEGEND = ("error = max|hand - ref| / (rtol * max(max|ref| of the quantity, "
           f"{ATOL_FRAC:g} * largest |ref| of the check)); <= 1 agrees")


@dataclasses.dataclass(frozen=True)
class HvpCheck:
    """One quantity's second-order derivative against one reference (``error <= 1`` agrees;
    ``rtol``: the tolerance it is measured in)."""

    where: str
    quantity: str
    reference: str
    error: float
    rtol: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.error) and self.error <= 1)


@dataclasses.dataclass(frozen=True)
class HvpReport:
    """What :func:`check_hvp` found: ``.ok``, ``.verdict()``, ``str()`` a table."""

    checks: tuple[HvpCheck, ...]
    dtype: str
    settings: dict

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def failures(self) -> tuple[HvpCheck, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def verdict(self) -> str:
        """One line: OK with the count and worst error, or the first failing place."""
        if not self.checks:
            return "second order FAILED: nothing was checked"
        if self.ok:
            places = len({c.where for c in self.checks})
            worst = max(c.error for c in self.checks)
            return (f"second order OK: {len(self.checks)} comparisons in {places} places "
                    f"agree (worst error {worst:.1e} <= 1)")
        bad = self.failures()[0]
        more = f" (+{len(self.failures()) - 1} more)" if len(self.failures()) > 1 else ""
        return fit(f"second order FAILED: {bad.where}: {bad.quantity} disagrees with "
                   f"{bad.reference} (error {bad.error:.1e}){more}")

    def by_place(self) -> str:
        """One line per place (a layer, or end to end): its worst error and where it came
        from; then the failing comparisons in full. The command line prints this."""
        places: dict[str, HvpCheck] = {}
        for c in self.checks:
            if c.where not in places or c.error > places[c.where].error:
                places[c.where] = c
        width = max(map(len, places), default=0)
        lines = [self.verdict(), f"{'':5}{'place':<{width}}  worst error  (quantity vs reference)"]
        lines += [f"{'ok  ' if c.ok else 'FAIL'} {w:<{width}}  {c.error:11.2e}  "
                  f"({c.quantity} vs {c.reference})" for w, c in places.items()]
        if self.failures():
            lines.append("failing comparisons:")
            lines += [f"FAIL {c.where}: {c.quantity} vs {c.reference}: {c.error:.2e}"
                      for c in self.failures()]
        lines.append(_LEGEND)
        return "\n".join(lines)

    def __str__(self) -> str:
        lines = [self.verdict(), _LEGEND]
        width = max(len(f"{c.where}: {c.quantity}") for c in self.checks) if self.checks else 0
        for c in self.checks:
            mark = "ok  " if c.ok else "FAIL"
            lines.append(f"{mark} {f'{c.where}: {c.quantity}':<{width}}  {c.reference:<28} "
                         f"{c.error:9.2e}  (rtol {c.rtol:g})")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class SecondOrderReport:
    """:func:`jaxprop.check_gradients` with ``order=2``: the first-order report (``first``) and
    the second-order one (``second``); ``.ok`` when both are."""

    first: object
    second: HvpReport

    @property
    def ok(self) -> bool:
        return bool(self.first.ok and self.second.ok)

    def verdict(self) -> str:
        """The first-order verdict while it fails, else the second-order one."""
        if not self.first.ok or not self.second.ok:
            return (self.second if self.first.ok else self.first).verdict()
        return "first and " + self.second.verdict()

    def __str__(self) -> str:
        return f"{self.first}\n\n{self.second}"


def _stacked(tree, rng: np.random.Generator, n: int):
    """``n`` random N(0, 1) tangents for ``tree``, stacked on a leading axis (its dtypes)."""
    return jax.tree.map(
        lambda a: jnp.asarray(rng.standard_normal((n, *np.shape(a))), a.dtype), tree)


def _jitter(x, rng: np.random.Generator):
    v = np.asarray(x, np.float64)
    rms = float(np.sqrt(np.mean(v * v))) or 1.0
    return jnp.asarray(v + JITTER * rms * rng.standard_normal(v.shape), x.dtype)


def _cast(tree, dtype):
    """The floating leaves of ``tree`` in ``dtype``, converted on the host (nothing compiles)."""
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a), dtype) if is_float(a) else a, tree)


def _rms_scale(tree) -> float:
    return max([1.0] + [float(np.sqrt(np.mean(np.square(np.asarray(a, np.float64)))))
                        for a in jax.tree.leaves(tree) if np.size(a)])


def _layer_points(model: Model, params, state, x, key, train):
    """``(where, layer, params, state, x, key)`` for every leaf layer, on its actual input (each
    model's outputs by one fast-compiled program)."""
    def trace(m, p, s, x_, k):
        return jit_once(lambda p_, s_, x__, k_: m.forward_trace(p_, s_, x__, key=k_,
                                                                train=train)[0])(p, s, x_, k)

    for index, layer, p, s, xi, k in layer_points(model, params, state, x, key, train,
                                                  trace=trace):
        yield f"layer {index} {layer.name}", layer, p, s, xi, k


def _backward_pair(layer, state, key, train, ids=None):
    """``(hand, ref)``: ``(params, x, dy) -> (dparams, dx)`` by the layer's backward and by
    ``jax.vjp`` of its forward; on fixed integer ``ids`` (an Embedding's input)
    ``(params, dy) -> dparams`` instead."""
    def forward(p, x):
        return layer.forward(p, state, x, key=key, train=train)

    def hand(p, x, dy):
        return layer.backward(p, forward(p, x)[1], dy)

    def ref(p, x, dy):
        return jax.vjp(lambda p_, x_: forward(p_, x_)[0], p, x)[1](dy)

    if ids is None:
        return hand, ref
    return (lambda p, dy: layer.backward(p, forward(p, ids)[1], dy)[0],
            lambda p, dy: jax.vjp(lambda p_: forward(p_, ids)[0], p)[1](dy)[0])


@dataclasses.dataclass(frozen=True)
class _Item:
    """One function to check: its hand-written and reference forms, at ``primals``, along the
    stacked ``tangents``, with finite-difference steps ``steps`` (empty: none)."""

    where: str
    names: list
    hand: object
    ref: object
    primals: tuple
    tangents: tuple
    steps: tuple


def _derivatives(items: list, primals: list, tangents: list) -> list:
    """Inside one trace: per item ``(jvp of hand, jvp of ref, [differences of hand per step])``,
    each a list of leaves with the directions on the leading axis."""
    out = []
    for item, pr, tg in zip(items, primals, tangents):
        hand = jax.vmap(lambda u, it=item, pr=pr: jax.jvp(it.hand, pr, u)[1])(tg)
        ref = jax.vmap(lambda u, it=item, pr=pr: jax.jvp(it.ref, pr, u)[1])(tg)

        def central(u, h, it=item, pr=pr):
            plus = it.hand(*jax.tree.map(lambda q, d: q + h * d, pr, u))
            minus = it.hand(*jax.tree.map(lambda q, d: q - h * d, pr, u))
            return jax.tree.map(lambda a, b: (a - b) / (2 * h), plus, minus)

        fds = [jax.tree.leaves(jax.vmap(lambda u, h=h: central(u, h))(tg)) for h in item.steps]
        out.append((jax.tree.leaves(hand), jax.tree.leaves(ref), fds))
    return out


def _comparisons(item: _Item, hand_l, ref_l, fds, dtype_name: str) -> list:
    """The :class:`HvpCheck` rows of one item: each output leaf against each reference."""
    hand_l = [np.asarray(a, np.float64) for a in hand_l]
    refs = [(f"jax.jvp(autodiff) {dtype_name}", TOLERANCES[dtype_name], [ref_l])]
    if fds:
        refs.append((FD_REFERENCE, TOLERANCES["fd"], fds))
    checks = []
    for reference, rtol, alternatives in refs:
        alternatives = [[np.asarray(a, np.float64) for a in alt] for alt in alternatives]
        top = max([float(np.max(np.abs(r))) for r in alternatives[0] if r.size] + [0.0])
        for i, (name, g) in enumerate(zip(item.names, hand_l)):
            if g.size:
                error = min(_error(g, alt[i], top) for alt in alternatives) / rtol
                checks.append(HvpCheck(item.where, name, reference, error, rtol))
    return checks


def _error(g, r, top: float) -> float:
    """``max|g - r|`` relative to the reference's scale, over all directions of one quantity
    (divided by the reference's ``rtol`` it is the error measure of the module docstring)."""
    denominator = max(float(np.max(np.abs(r))), ATOL_FRAC * top, np.finfo(np.float64).tiny)
    return float(np.max(np.abs(g - r))) / denominator


def _names(tree, head: str) -> list[str]:
    return [f"{head}{jax.tree_util.keystr(p)}" for p, _ in
            jax.tree_util.tree_flatten_with_path(tree)[0]]


def check_hvp(model: Model, loss: str | Loss, params, x, t, *, state=None, key=None,
              train: bool = True, directions: int = DIRECTIONS, seed: int = 0,
              layers: bool = True, fd: bool = True, dtype=None) -> HvpReport:
    """Check second derivatives through the hand-written backward: every layer's, then the
    loss's Hessian-vector products (see the module docstring).

    Args:
      model: a :class:`~jaxprop.Model`.
      loss: a loss name or :class:`~jaxprop.Loss`.
      params, x, t: parameters, inputs ``(batch, *in_shape)`` and targets.
      state, key, train: the model's state (fixed), the forward key (default
        ``jax.random.key(seed)``; Dropout's mask, fixed) and the mode.
      directions: random directions per check; seed: draws them and the jitter.
      layers: also check every layer's backward (default); ``False``: end to end only.
      fd: also compare with float64 finite differences of the hand-written functions
        (default; ``False`` compiles about half as much).
      dtype: the working dtype (default: the params'); float64 is checked in any case.

    Returns:
      An :class:`HvpReport`; its verdict names the first layer or leaf that disagrees.
    """
    loss = get_loss(loss)
    if not isinstance(model, Model):
        raise ValueError(f"check_hvp takes a model (jp.serial, jp.mlp), got "
                         f"{type(model).__name__}")
    if not isinstance(directions, int) or directions < 1:
        raise ValueError(f"directions must be an int >= 1, got {directions!r}")
    dtype_name = jnp.dtype(dtype or params_dtype(params) or jnp.float32).name
    if dtype_name not in ("float32", "float64"):
        raise ValueError(f"check_hvp works in float32 or float64, not {dtype_name}")
    key = jax.random.key(seed) if key is None else key
    rng = np.random.default_rng(seed)
    x, t = validate_data(params, x, t, loss=loss, model=model)
    checks = []
    for name in dict.fromkeys((dtype_name, "float64")):
        with x64_for(name), jax.default_matmul_precision("highest"):
            run = tuple(_cast(a, jnp.dtype(name)) for a in (params, state, x, t))
            checks += _pass(model, loss, *run, key, train, name, rng, directions, layers, fd)
    return HvpReport(tuple(checks), dtype_name, {
        "seed": seed, "directions": directions, "fd": fd, "loss": loss.name, "train": train,
        "model": model.describe()})


def _pass(model, loss, params, state, x, t, key, train, dtype_name, rng, directions, layers,
          fd):
    """Every comparison in one dtype, as one compiled program (float64 adds differences)."""
    fd = fd and dtype_name == "float64"
    items = []
    points = _layer_points(model, params, state, x, key, train) if layers else ()
    for where, layer, p, s, xi, k in points:
        ids = not is_float(xi)  # token ids (an Embedding's input): fixed, no dx
        xi = xi if ids else _jitter(xi, rng)
        y = jax.eval_shape(lambda: layer.forward(p, s, xi, key=k, train=train)[0])
        dy = jnp.asarray(rng.standard_normal(y.shape), y.dtype)
        hand, ref = _backward_pair(layer, s, k, train, xi if ids else None)
        primals = (p, dy) if ids else (p, xi, dy)
        names = [f"d({n})" for n in _names(p, "dparams")] + ([] if ids else ["d(dx)"])
        steps = tuple(FD_H * _rms_scale(primals) / d for d in (1, 100)) if fd else ()
        items.append(_Item(where, names, hand, ref, primals, _stacked(primals, rng, directions),
                           steps))
    grad_fn = loss_and_grad_fn(model, loss)

    def hand(p):
        return grad_fn(p, x, t, state=state, key=key, train=train)[1]

    def ref(p):
        return jax.grad(lambda p_: loss.value(
            model.forward(p_, state, x, key=key, train=train)[0], t))(p)

    steps = tuple(FD_H * _rms_scale(params) / d for d in (1, 100)) if fd else ()
    items.append(_Item("end to end", [f"H v {n}" for n in leaf_names(model, params)], hand,
                       ref, (params,), _stacked((params,), rng, directions), steps))
    program = jit_once(lambda pr, tg: _derivatives(items, pr, tg))
    results = program([it.primals for it in items], [it.tangents for it in items])
    return [c for item, res in zip(items, results) for c in _comparisons(item, *res, dtype_name)]
