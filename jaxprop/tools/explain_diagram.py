"""``jaxprop explain --diagram``: the network of a worked example drawn with box characters.

One box per unit, a band of boxes per layer from the inputs down to the outputs (``z``, ``a``,
``dL/da``, the activation's ``da/dz`` and ``delta = dL/dz`` of one example), and between two
bands every edge's weight, its gradient and its weight after the step. At most :data:`WIDTH`
columns.
"""

from __future__ import annotations

import numpy as np

WIDTH = 100
_BOX = 27  # a unit's box, borders included


def _f(v: float) -> str:
    return f"{v:.6f}"


def _boxes(title_lines: list[tuple[str, list[str]]]) -> list[str]:
    """Boxes ``(title, lines)`` side by side, as many to a row as fit in :data:`WIDTH`."""
    per_row = max(1, (WIDTH - 2) // (_BOX + 1))
    out = []
    for start in range(0, len(title_lines), per_row):
        row = title_lines[start:start + per_row]
        height = max(len(lines) for _, lines in row)
        top = " ".join(f"┌─ {t} " + "─" * (_BOX - 5 - len(t)) + "┐" for t, _ in row)
        body = [" ".join("│ " + (lines[i] if i < len(lines) else "").ljust(_BOX - 4) + " │"
                         for _, lines in row) for i in range(height)]
        bottom = " ".join("└" + "─" * (_BOX - 2) + "┘" for _ in row)
        out += ["  " + line for line in (top, *body, bottom)]
    return out


def diagram(v: dict, index: int = 0, example: int = 0) -> str:
    """The kept step ``index`` of the view ``v`` (:func:`~jaxprop.tools.explain_view.view`)
    for example ``example``, as text of at most :data:`WIDTH` columns."""
    st = v["steps"][index]
    names, batch = v["names"], len(v["input"])
    head = (f"Step {st['step'] + 1}/{v['n_steps']} · example {example}"
            f"{f' of {batch}' if batch > 1 else ''} · loss {_f(st['loss'])} → "
            f"{_f(st['loss_after'])}")
    lines = [head, f"  loss {v['loss']}, learning rate {v['learning_rate']:g}: "
             "w ← w − lr·dL/dw"]
    if v["article_sign"]:
        lines.append("  delta = dL/dz (textbooks writing δ = (t − y)·f′(z) for sse_half: "
                     "δ = −delta)")
    lines.append("")
    lines.append("  inputs")
    lines += _boxes([(n, [f"x     {_f(x)}"]) for n, x in zip(names[0], v["input"][example])])
    fixed = "" if v["update_biases"] else " (fixed)"
    for k, r in enumerate(st["layers"]):
        lines += _edges(names[k], names[k + 1], r)
        last = k == len(st["layers"]) - 1
        coupled = np.ndim(r["dadz"]) == 3  # each a depends on every z of its layer
        lines.append(f"  layers[{k}]: {v['activations'][k]}" + ("  (output)" if last else "")
                     + ("  delta_j = Σₖ dL/da_k·da_k/dz_j" if coupled else ""))
        units = []
        for j, name in enumerate(names[k + 1]):
            rows = [f"z     {_f(r['z'][example][j])}", f"a     {_f(r['a'][example][j])}"]
            if last:
                rows.append(f"t     {_f(v['target'][example][j])}")
            rows.append(f"dL/da {_f(r['da'][example][j])}")
            if not coupled:
                rows.append(f"da/dz {_f(r['dadz'][example][j])}")
            rows += [f"delta {_f(r['delta'][example][j])}",
                     f"b {_f(r['b_before'][j])}{fixed}" if fixed else
                     f"b {_f(r['b_before'][j])}→{_f(r['b_after'][j])}"]
            units.append((name, rows))
        lines += _boxes(units)
    return "\n".join(line.rstrip() for line in lines)


def _edges(src: list[str], dst: list[str], r: dict) -> list[str]:
    """The edges between two bands: ``w``, ``dL/dw`` and ``w`` after the step."""
    out = ["        │  edge        w            dL/dw        w after"]
    for i, a in enumerate(src):
        for j, b in enumerate(dst):
            out.append(f"        ├─ {f'{a}→{b}':<10}{r['W_before'][i][j]:>10.6f}   "
                       f"{r['dW'][i][j]:>10.6f}   {r['W_after'][i][j]:>10.6f}")
    return out + ["        ▼"]
