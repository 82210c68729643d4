"""The records and tables of gradient checks (:mod:`jaxprop.tools.gradcheck`): what was
compared with what, the errors, and one-line verdicts that name the first wrong layer.

* :class:`Comparison` -- one hand-written quantity against one reference;
* :class:`QuantityCheck` -- ``dx`` or one ``dparams`` leaf of a layer, against every reference;
* :class:`LayerCheck` -- one layer's backward at one point (or the message of a malformed one);
* :class:`LayerReport` -- what :func:`~jaxprop.check_layer` and :func:`~jaxprop.check_loss`
  return;
* :class:`LeafCheck`, :class:`GradCheckReport` -- end-to-end leaves, and what
  :func:`~jaxprop.check_gradients` returns (its layers and its leaves).

``layer_rows``, ``quantity_rows`` and ``problems`` give the tables' rows and the problem lines
(plain strings: ``str(report)`` and the CLI's rich tables both use them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from jaxprop.core.checks import layer_label

# --------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Comparison:
    """A hand-written quantity against one reference (errors as in the module docstring)."""

    reference: str  # "jax.vjp float32", "jax.vjp float64" or "finite differences float64"
    abs_err: float
    rel_err: float
    ok: bool
    rtol: float

    @property
    def error(self) -> float:
        """The one error measure: ``max |g - r| / (rtol |r| + atol)``; agrees when ``<= 1``."""
        return self.rel_err / self.rtol

    def describe(self) -> str:
        return f"{self.reference} (error {self.error:.1e})"


@dataclass(frozen=True)
class QuantityCheck:
    """``dx`` or one ``dparams`` leaf of one layer, against every reference."""

    name: str  # "dx", "W", "b", "0 W" (nested params)
    shape: tuple[int, ...]
    dtype: str
    comparisons: tuple[Comparison, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons)

    def rel_err(self, reference: str) -> float | None:
        return next((c.rel_err for c in self.comparisons if c.reference == reference), None)

    @property
    def worst(self) -> Comparison | None:
        """The comparison with the largest error (the table's ``error`` and ``vs``)."""
        return max(self.comparisons, key=lambda c: c.error, default=None)


@dataclass(frozen=True)
class LayerCheck:
    """The backward pass of one layer at one point. ``index`` is its position in the model
    (``"3"``, ``"2.1"`` inside a nested model; ``""`` for a layer checked alone); ``point`` says
    which params (``"given params"``, ``"perturbed params"``, ``"random params"``) and, in
    :func:`~jaxprop.check_layer`, which inputs (``draw``); ``error`` is set when ``backward``
    returned something malformed (or raised)."""

    index: str
    name: str
    point: str
    quantities: tuple[QuantityCheck, ...] = ()
    error: str | None = None
    draw: str | None = None  # check_layer's input draw ("normal", "wide x10", "near-kink", ...)

    @property
    def label(self) -> str:
        return label(self.index, self.name)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.quantities) and all(q.ok for q in self.quantities)

    @property
    def where(self) -> str:
        """``"random params"``, or with check_layer's draw ``"random params, wide x10 inputs"``."""
        return self.point if self.draw is None else f"{self.point}, {self.draw} inputs"

    def problem(self) -> str:
        """What is wrong, in one line (``""`` when ok)."""
        if self.error is not None:
            return self.error
        if not self.quantities:
            return "nothing to check: no floating input and no floating parameters"
        bad = [q for q in self.quantities if not q.ok]
        if not bad:
            return ""
        first = bad[0]
        refs = ", ".join(c.describe() for c in first.comparisons if not c.ok)
        others = f" (also wrong: {', '.join(q.name for q in bad[1:])})" if bad[1:] else ""
        return f"{first.name} disagrees with {refs} at the {self.where}{others}"

    def short_problem(self) -> str:
        """:meth:`problem` for a verdict: the first wrong quantity and reference only."""
        bad = [q for q in self.quantities if not q.ok]
        if self.error is not None or not bad:
            return self.problem()
        c = next(c for c in bad[0].comparisons if not c.ok)
        others = f"; also {', '.join(q.name for q in bad[1:])}" if bad[1:] else ""
        return f"{bad[0].name} disagrees with {c.describe()} at the {self.where}{others}"


def label(index: str, name: str) -> str:
    """``"layer 2.1 (tanh)"`` for a layer of a model; the name alone otherwise."""
    return layer_label(index, name) if index[:1].isdigit() else name


def _references(layers: Sequence[LayerCheck]) -> tuple[str, ...]:
    """Every reference the layers were compared with, in first-seen order."""
    return tuple(dict.fromkeys(c.reference for lc in layers for q in lc.quantities
                               for c in q.comparisons))


def _short(reference: str) -> str:
    """A reference's name for a table: ``"vjp float32"``, ``"FD float64"``."""
    return reference.replace("finite differences", "FD").replace("jax.vjp", "vjp")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1e}"


ERROR_LEGEND = ("error = max |hand - ref| / (rtol |ref| + atol), worst over the references (vs), "
                "each with its tolerance; <= 1 agrees")


def _worst(quantities: Sequence[QuantityCheck]) -> tuple[str, str]:
    """``(error, vs)`` cells: the largest error over ``quantities`` and its reference."""
    worst = [w for q in quantities if (w := q.worst) is not None]
    if not worst:
        return "-", "-"
    c = max(worst, key=lambda c: c.error)
    return _fmt(c.error), _short(c.reference)


def layer_rows(layers: Sequence[LayerCheck]) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: one row per layer check, its worst error and against what."""
    header = ["layer", "at", "checked", "error", "vs", "ok"]
    rows = []
    for lc in layers:
        checked = " ".join(q.name for q in lc.quantities) or "-"
        rows.append([lc.label, lc.point, checked, *_worst(lc.quantities),
                     "yes" if lc.ok else "NO"])
    return header, rows


def quantity_rows(layers: Sequence[LayerCheck]) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: one row per checked quantity (for a layer checked alone); the
    ``inputs`` column names check_layer's draw."""
    draws = any(lc.draw for lc in layers)
    header = ["quantity", "shape", *(["inputs"] if draws else []), "error", "vs", "ok"]
    rows = []
    names = {lc.label for lc in layers}
    for lc in layers:
        prefix = f"{lc.label}: " if len(names) > 1 else ""
        draw = [lc.draw or "-"] if draws else []
        for q in lc.quantities:
            rows.append([prefix + q.name, str(q.shape), *draw, *_worst([q]),
                         "yes" if q.ok else "NO"])
        if lc.error is not None:
            rows.append([prefix + "backward", "-", *draw, "-", "-", "NO"])
    return header, rows


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header)] + [line(r) for r in rows])


def _layers_summary(layers: Sequence[LayerCheck]) -> str:
    n_q = sum(len(lc.quantities) for lc in layers)
    names = {lc.index or lc.name for lc in layers}
    points = list(dict.fromkeys(lc.where for lc in layers))
    return (f"{len(names)} layer(s), {n_q} quantit{'y' if n_q == 1 else 'ies'} checked against "
            f"{', '.join(_references(layers))}, at: {'; '.join(points)}")


def _worst_error(layers: Sequence[LayerCheck]) -> float:
    return max((c.error for lc in layers for q in lc.quantities for c in q.comparisons),
               default=0.0)


def _failing(layers: Sequence[LayerCheck]) -> tuple[LayerCheck, ...]:
    """The layer checks that are not ok, in order."""
    return tuple(lc for lc in layers if not lc.ok)


class _LayerFailures:
    """``layer_failures`` and ``first_failure`` of a report with ``layers``."""

    layers: tuple[LayerCheck, ...]

    @property
    def layer_failures(self) -> tuple[LayerCheck, ...]:
        """The layer checks that disagree (or are malformed), in forward order."""
        return _failing(self.layers)

    @property
    def first_failure(self) -> LayerCheck | None:
        """The first disagreeing layer in forward order (at the given params first)."""
        return next(iter(self.layer_failures), None)


@dataclass(frozen=True)
class LayerReport(_LayerFailures):
    """The result of :func:`check_layer` or :func:`check_loss`: one :class:`LayerCheck` per
    layer (and point) checked; ``ok`` when each checked something and all of it agreed."""

    layers: tuple[LayerCheck, ...]
    dtype: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.layers) and all(lc.ok for lc in self.layers)

    @property
    def leaves(self) -> tuple[QuantityCheck, ...]:
        return tuple(q for lc in self.layers for q in lc.quantities)

    @property
    def failures(self) -> tuple[LayerCheck, ...]:
        """The layer checks that disagree (``layer_failures``)."""
        return self.layer_failures

    def _where(self) -> str:
        s = self.settings
        return ", ".join(f"{k.replace('_', ' ')} {s[k]}" for k in ("in_shape", "out_shape",
                                                                   "batch", "train") if k in s)

    def verdict(self) -> str:
        """One line of at most ~120 characters: passed or failed, and the first problem
        (:meth:`details` says the rest)."""
        if self.ok:
            labels = ", ".join(dict.fromkeys(lc.label for lc in self.layers))
            what = ", ".join(dict.fromkeys(q.name for q in self.leaves))
            n = len({lc.where for lc in self.layers})
            return fit(f"OK: {labels}: backward agrees for {what} at {n} "
                       f"point{'s' if n > 1 else ''} (worst error "
                       f"{_worst_error(self.layers):.1e} <= 1)")
        first = self.first_failure
        return fit(f"FAILED: {first.label}: {first.short_problem()}")

    def details(self) -> str:
        """What was checked, at which points, with which tolerances, and every problem."""
        lines = [f"  {line}" for line in problems(self.layers)]
        lines += [f"checked {_layers_summary(self.layers)}",
                  f"tolerances: {_tolerance_text(self.layers)}"]
        if self._where():
            lines.append(self._where())
        return "\n".join(lines)

    def __str__(self) -> str:
        return "\n".join([_text_table(*quantity_rows(self.layers)), ERROR_LEGEND,
                          self.verdict(), self.details()])


def problems(layers: Sequence[LayerCheck]) -> list[str]:
    """One line per failing layer check: ``"layer 2 (scale): dx disagrees with ..."``."""
    return [f"{lc.label}: {lc.problem()}" for lc in _failing(layers)]


def _tolerance_text(layers: Sequence[LayerCheck]) -> str:
    rtols = {c.reference: c.rtol for lc in layers for q in lc.quantities for c in q.comparisons}
    return ", ".join(f"{ref} rtol {rtol:g}" for ref, rtol in rtols.items())


@dataclass(frozen=True)
class LeafCheck:
    """The end-to-end check of one parameter leaf. Errors follow the module docstring."""

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
class GradCheckReport(_LayerFailures):
    """The result of :func:`check_gradients`: per-layer checks (``layers``, in forward order,
    at each point) and per-leaf end-to-end checks (``leaves``). ``ok`` when something was
    checked and everything agreed."""

    leaves: tuple[LeafCheck, ...]
    dtype: str
    grad_rtol: float
    fd_rtol: float
    atol_frac: float  # vs finite differences
    grad_atol_frac: float  # vs jax.grad
    max_fd_coords: int
    settings: dict[str, Any] = field(default_factory=dict)
    layers: tuple[LayerCheck, ...] = ()
    end_to_end_error: str | None = None
    cancel_ulps: int | None = None  # vs jax.grad: atol floor, ulps of the largest entry

    @property
    def checked(self) -> int:
        """Quantities checked: end-to-end leaves plus every layer's ``dx`` and ``dparams``."""
        return len(self.leaves) + sum(len(lc.quantities) for lc in self.layers)

    @property
    def ok(self) -> bool:
        return (self.checked > 0 and self.end_to_end_error is None
                and all(leaf.ok for leaf in self.leaves) and all(lc.ok for lc in self.layers))

    @property
    def failures(self) -> tuple[LeafCheck, ...]:
        """The end-to-end leaves that disagree."""
        return tuple(leaf for leaf in self.leaves if not leaf.ok)

    def leaf_error(self, leaf: LeafCheck) -> tuple[float, str]:
        """``(error, vs)``: a leaf's worst error (as :data:`ERROR_LEGEND`) and against what."""
        grad, fd = leaf.grad_rel_err / self.grad_rtol, leaf.fd_rel_err / self.fd_rtol
        return (grad, "jax.grad") if grad >= fd else (fd, "FD float64")

    def _tolerances(self) -> str:
        n_sampled = sum(leaf.sampled for leaf in self.leaves)
        tail = (f"; finite differences on a random {self.max_fd_coords}-coordinate subset of "
                f"{n_sampled} large leaf(s)" if n_sampled else "")
        atol = (f"atol {self.atol_frac:g} x rtol x leaf scale" if self.grad_atol_frac ==
                self.atol_frac else f"atol {self.grad_atol_frac:g} (jax.grad) and "
                f"{self.atol_frac:g} (finite differences) x rtol x leaf scale")
        floor = (f" (vs jax.grad at least {self.cancel_ulps} ulps of the largest gradient entry)"
                 if self.cancel_ulps else "")
        return (f"(vs jax.grad rtol {self.grad_rtol:g} in {self.dtype}, vs finite differences "
                f"rtol {self.fd_rtol:g} in float64, {atol}{floor}{tail})")

    def _end_to_end(self) -> str:
        n = len(self.leaves)
        if self.end_to_end_error is not None:
            return f"end to end: {self.end_to_end_error}"
        if self.failures:
            bad = ", ".join(leaf.name for leaf in self.failures)
            return f"{len(self.failures)} of {n} gradient leaves disagree: {bad}"
        return f"end to end all {n} gradient leaves agree"

    def verdict(self) -> str:
        """One line of at most ~120 characters: passed or failed, the first wrong layer
        (:meth:`details` says the rest)."""
        n = len(self.leaves)
        if self.ok:
            head = f"OK: all {n} gradient leaves agree" if n else \
                "OK: no parameters; every layer's dx agrees"
            return fit(f"{head}; every layer's backward agrees (worst error "
                       f"{self._worst():.1e} <= 1)")
        if self.checked == 0:
            return "FAILED: nothing was checked (no parameters, no floating inputs)"
        first = self.first_failure
        if first is None:  # every layer agrees, the composition does not: the loss's grad
            return fit(f"FAILED: {len(self.failures)} of {n} gradient leaves disagree, every "
                       "layer agrees: look at the loss's grad")
        return fit(f"FAILED: {first.label}: {first.short_problem()}")

    def _worst(self) -> float:
        return max([_worst_error(self.layers)] + [self.leaf_error(leaf)[0]
                                                  for leaf in self.leaves])

    def details(self) -> str:
        """Every problem, the end-to-end result, what was checked and the tolerances."""
        lines = [f"  {line}" for line in problems(self.layers)]
        if self.end_to_end_error is not None or self.leaves:
            lines.append(self._end_to_end())
        if self.layers:
            lines.append(f"layers: {_layers_summary(self.layers)}")
        lines.append(f"end to end: {self._tolerances()[1:-1]}")
        return "\n".join(lines)

    def __str__(self) -> str:
        parts = []
        if self.layers:
            parts.append(_text_table(*layer_rows(self.layers)))
        if self.leaves:
            parts.append(_text_table(*leaf_rows(self)))
        return "\n\n".join(parts) + "\n" + "\n".join([ERROR_LEGEND, self.verdict(),
                                                     self.details()])


def leaf_rows(report: GradCheckReport) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: one row per end-to-end leaf, its error and against what."""
    rows = []
    for c in report.leaves:
        error, vs = report.leaf_error(c)
        rows.append([c.name, str(c.shape), _fmt(error), vs + (
            f" (FD on {c.fd_coords}/{c.size})" if c.sampled else ""), "yes" if c.ok else "NO"])
    return ["leaf", "shape", "error", "vs", "ok"], rows


# --------------------------------------------------------------------------------------------
# Any function's gradient rule (jaxprop.tools.check_function)


@dataclass(frozen=True)
class LeafDiff:
    """One leaf of a function's gradient (an argument's in reverse mode, ``input -> output``
    in forward mode) against the reference: the worst ``error`` (``<= 1`` agrees), how many
    entries disagree of how many were checked, and the worst of them ``(index, rule, ref)``."""

    where: str  # "argument 1 (w)['b']", "argument 0 (x) -> output[0]"
    shape: tuple[int, ...]
    error: float
    n_bad: int
    n_checked: int
    worst: tuple[tuple[tuple[int, ...], float, float], ...] = ()

    @property
    def ok(self) -> bool:
        return self.error <= 1.0

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def problem(self) -> str:
        """``"3 of 16 entries disagree, e.g. [2, 5]: rule 0.12, reference 0.5"`` (``""`` if ok)."""
        if self.ok:
            return ""
        eg = "; ".join(f"[{', '.join(map(str, i))}]: rule {g:.4g}, reference {r:.4g}"
                       for i, g, r in self.worst[:2])
        return f"{self.n_bad} of {self.n_checked} entries disagree (error {self.error:.1e}), " \
               f"e.g. {eg}"


@dataclass(frozen=True)
class FunctionReport:
    """The result of :func:`~jaxprop.check_vjp` / :func:`~jaxprop.check_jvp`: one
    :class:`LeafDiff` per checked leaf; ``ok`` when something was checked and all agree."""

    mode: str  # "vjp" or "jvp"
    function: str
    reference: str
    dtype: str
    rtol: float
    atol_frac: float
    leaves: tuple[LeafDiff, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    autodiff_slack: float | None = None  # atol += this x |autodiff in dtype - reference|
    draw: str | None = None  # the input draw of ShapeDtypeStruct arguments (None: as given)

    @property
    def ok(self) -> bool:
        return bool(self.leaves) and all(leaf.ok for leaf in self.leaves)

    @property
    def failures(self) -> tuple[LeafDiff, ...]:
        return tuple(leaf for leaf in self.leaves if not leaf.ok)

    def verdict(self) -> str:
        """One line (at most ~120 characters): passed or failed, and the first wrong leaf."""
        what = f"{self.function}'s {self.mode} rule in {self.dtype}"
        if not self.leaves:
            return f"FAILED: {what}: nothing to check (no floating argument or output)"
        if self.ok:
            worst = max(leaf.error for leaf in self.leaves)
            n = len(self.leaves)
            draws = self.settings.get("draws") or ()
            at = f" at {len(draws)} draws" if len(draws) > 1 else ""
            return fit(f"OK: {what}: {n} lea{'f agrees' if n == 1 else 'ves agree'}{at} (worst "
                        f"error {worst:.1e} <= 1)")
        first = self.failures[0]
        more = f" (+{len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
        at = f" at {self.draw} arguments" if self.draw else ""
        return fit(f"FAILED: {what}: {first.where}: {first.n_bad} of {first.n_checked} "
                    f"entries disagree, error {first.error:.1e}{at}{more}")

    def tolerance(self) -> str:
        """The measure and the tolerance used, in one line."""
        slack = (f" + {self.autodiff_slack:g} x |jax.{self.mode} in {self.dtype} - reference|"
                 if self.autodiff_slack else "")
        return (f"error = |rule - reference| / (rtol |reference| + atol), rtol {self.rtol:g} "
                f"({self.dtype}), atol = {self.atol_frac * self.rtol:g} x the leaf's largest "
                f"reference entry{slack}; agrees when error <= 1")

    def details(self) -> str:
        """What was compared with what, the tolerance, and every leaf that disagrees."""
        at = f", arguments drawn {self.draw}" if self.draw else ""
        lines = [f"checked {self.function}'s {self.mode} rule in {self.dtype} against "
                 f"{self.reference}{at}", self.tolerance()]
        for leaf in self.leaves:
            sampled = f" (finite differences on {leaf.n_checked} of {leaf.size})" \
                if leaf.n_checked < leaf.size else ""
            lines.append(f"  {leaf.where} {leaf.shape}: error {leaf.error:.1e} "
                         f"{'ok' if leaf.ok else 'WRONG'}{sampled}")
            if not leaf.ok:
                lines.append(f"    {leaf.problem()}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.verdict() + "\n" + self.details()


VERDICT_WIDTH = 120


def fit(line: str, width: int = VERDICT_WIDTH) -> str:
    """``line`` cut to ``width`` characters (``...`` at the end); the details say the rest."""
    return line if len(line) <= width else line[:width - 3] + "..."
