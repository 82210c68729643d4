"""What the pictures of ``jaxprop explain`` draw: one JSON-able view of a spec and its trace.

:func:`view` arranges what :func:`jaxprop.tools.explain.explain` returned (nothing is
recomputed but the weight-times-input terms of each sum, the products the pictures write on the
edges) for the page (:mod:`jaxprop.tools.explain_html`) and the terminal diagram
(:mod:`jaxprop.tools.explain_diagram`): the units' names, the data, and per kept step every
layer's values with its parameters before and after the step.
"""

from __future__ import annotations

import numpy as np

# a page keeps at most this many steps (evenly spaced, the first and the last always); the
# loss curve keeps every step
MAX_VIEW_STEPS = 200


def unit_names(widths: list[int]) -> list[list[str]]:
    """Names of the units, a list per layer: ``x0, x1`` for the inputs, ``y0`` for the outputs,
    ``h0, h1`` for one hidden layer (``h1.0`` for unit 0 of hidden layer 1 when there are
    several)."""
    hidden = len(widths) - 2
    names = [[f"x{i}" for i in range(widths[0])]]
    for k, w in enumerate(widths[1:-1], start=1):
        names.append([f"h{j}" if hidden == 1 else f"h{k}.{j}" for j in range(w)])
    names.append([f"y{j}" for j in range(widths[-1])])
    return names


def kept_steps(n: int, limit: int = MAX_VIEW_STEPS) -> list[int]:
    """Indices of the steps a view keeps: all ``n`` up to ``limit``, else ``limit`` evenly
    spaced ones with the first and the last."""
    if n <= limit:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, limit)})


def view(spec, result: dict, limit: int = MAX_VIEW_STEPS) -> dict:
    """The view of ``result`` (from ``explain(spec)``) that the pictures draw, JSON-able.

    Returns ``{"description", "widths", "names", "activations", "loss", "learning_rate",
    "update_biases", "input", "target", "n_steps", "losses", "final_loss", "steps"}``:
    ``losses`` has every step's loss before its update; ``steps`` the kept steps (see
    :func:`kept_steps`), each ``{"step": index, "loss", "loss_after", "layers": [...]}`` with
    per layer the trace's entries plus ``W_before``, ``b_before`` and ``terms``
    (``(batch, in, out)``: ``W_before[i][j] * input_i`` for every example).
    """
    widths = [spec.input.shape[1]] + [ls.W.shape[1] for ls in spec.layers]
    steps = result["steps"]
    losses = [st["loss"] for st in steps]
    after = losses[1:] + [result["final_loss"]]
    kept = []
    for s in kept_steps(len(steps), limit):
        before = ([(ls.W.tolist(), ls.b.tolist()) for ls in spec.layers] if s == 0 else
                  [(r["W_after"], r["b_after"]) for r in steps[s - 1]["layers"]])
        layers, inputs = [], spec.input
        for (W, b), r in zip(before, steps[s]["layers"]):
            terms = np.asarray(inputs)[:, :, None] * np.asarray(W)[None, :, :]
            layers.append({**r, "W_before": W, "b_before": b, "terms": terms.tolist()})
            inputs = r["a"]
        kept.append({"step": s, "loss": losses[s], "loss_after": after[s], "layers": layers})
    return {
        "description": spec.description, "widths": widths, "names": unit_names(widths),
        "activations": [ls.activation for ls in spec.layers], "loss": spec.loss,
        "learning_rate": spec.learning_rate, "update_biases": spec.update_biases,
        "input": spec.input.tolist(), "target": spec.target.tolist(),
        "n_steps": len(steps), "losses": losses, "final_loss": result["final_loss"],
        "steps": kept,
    }
