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


def article_sign(spec, result: dict) -> bool:
    """Whether the articles' ``delta = (t - y) f'(z)`` applies (and is minus jaxprop's
    ``dL/dz``): the loss gradient at the outputs is ``y - t`` (``sse_half``) and each output
    unit's activation depends on its own ``z`` alone; read off the first step of the trace."""
    last = result["steps"][0]["layers"][-1]
    y, da = np.asarray(last["a"]), np.asarray(last["da"])
    elementwise = np.ndim(last["dadz"]) == 2 if "dadz" in last else True
    return elementwise and np.allclose(da, y - spec.target, rtol=1e-12, atol=1e-300)


def view(spec, result: dict, limit: int = MAX_VIEW_STEPS) -> dict:
    """The view of ``result`` (from ``explain(spec)``) that the pictures draw, JSON-able.

    Returns ``{"description", "widths", "names", "activations", "loss", "learning_rate",
    "update_biases", "article_sign", "input", "target", "n_steps", "losses", "final_loss",
    "steps"}`` (``article_sign``: :func:`article_sign`):
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
        "article_sign": article_sign(spec, result),
        "input": spec.input.tolist(), "target": spec.target.tolist(),
        "n_steps": len(steps), "losses": losses, "final_loss": result["final_loss"],
        "steps": kept,
    }


def _labels(shape) -> list[str]:
    """Every index of an array of ``shape``, ``"0,1,0"`` (``"2"`` for a vector)."""
    return [",".join(map(str, i)) for i in np.ndindex(*shape)]


def _param_rows(r: dict) -> list[list]:
    """``[name[index], before, dL/dp, after]`` for every parameter of a layer's record."""
    rows = []
    for name, before in r["params"].items():
        b, g, a = (np.asarray(r[k][name], np.float64) for k in ("params", "grads",
                                                                 "params_after"))
        rows += [[f"{name}[{i}]", *map(float, (b.ravel()[n], g.ravel()[n], a.ravel()[n]))]
                 for n, i in enumerate(_labels(b.shape))]
    return rows


def table_view(spec, result: dict, limit: int = MAX_VIEW_STEPS) -> dict:
    """The view of a model drawn as tables (``explain`` of a
    :class:`~jaxprop.tools.explain.TableSpec`), JSON-able.

    Returns ``{"kind": "tables", "description", "model", "in_shape", "loss",
    "learning_rate", "input", "input_index", "target", "target_index", "n_steps", "losses",
    "final_loss", "steps"}``: each kept step ``{"step", "loss", "loss_after", "layers"}`` with
    per layer ``{"layer", "shape", "index", "output", "doutput", "params"}``: ``output`` and
    ``doutput`` one flat list per example in the order of ``index``, ``params`` rows
    ``[name[index], before, dL/dp, after]``.
    """
    steps = result["steps"]
    losses = [st["loss"] for st in steps]
    after = losses[1:] + [result["final_loss"]]
    batch = spec.input.shape[0]
    kept = []
    for s in kept_steps(len(steps), limit):
        layers = []
        for r in steps[s]["layers"]:
            out, dout = (np.asarray(r[k], np.float64) for k in ("output", "doutput"))
            layers.append({"layer": r["layer"], "shape": list(out.shape[1:]),
                           "index": _labels(out.shape[1:]),
                           "output": out.reshape(batch, -1).tolist(),
                           "doutput": dout.reshape(batch, -1).tolist(),
                           "params": _param_rows(r)})
        kept.append({"step": s, "loss": losses[s], "loss_after": after[s], "layers": layers})
    return {
        "kind": "tables", "description": spec.description, "model": spec.model,
        "in_shape": list(spec.in_shape), "loss": spec.loss,
        "learning_rate": spec.learning_rate,
        "input": spec.input.reshape(batch, -1).tolist(), "input_index": _labels(spec.in_shape),
        "target": spec.target.reshape(batch, -1).tolist(),
        "target_index": _labels(spec.target.shape[1:]),
        "n_steps": len(steps), "losses": losses, "final_loss": result["final_loss"],
        "steps": kept,
    }
