"""The pictures of ``jaxprop explain``: the page (``--html``) and the terminal diagram.

The page is also rendered in headless Chromium (a long test that skips where no browser is
installed): screenshots at several steps that are not blank and differ, and the DOM holds the
numbers of the step shown.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources

import numpy as np
import pytest

from jaxprop.cli import main
from jaxprop.tools import explain as ex
from jaxprop.tools.explain_diagram import WIDTH, diagram
from jaxprop.tools.explain_html import render_html
from jaxprop.tools.explain_view import MAX_VIEW_STEPS, kept_steps, unit_names, view

EXAMPLE = resources.files("jaxprop") / "examples" / "2-2-1.json"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def f6(v: float) -> str:
    return f"{v:.6f}"


def _embedded(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    return json.loads(m.group(1))


@pytest.mark.parametrize("name", sorted(ex.list_examples()))
def test_page_is_self_contained_and_embeds_the_trace(name):
    spec = ex.load_example(name)
    result = ex.explain(spec, steps=2)
    page = render_html(spec, result)
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    # nothing fetched from anywhere: no URLs, links, external scripts, images or fonts
    assert not re.search(r"https?://|<link|<img|src=|@import|url\(", page)
    assert _embedded(page) == json.loads(json.dumps(view(spec, result)))
    # the page's numbers are the trace's, not a second computation
    assert _embedded(page)["steps"][1]["layers"][0]["delta"] == result["steps"][1]["layers"][0][
        "delta"]


def test_page_escapes_the_description():
    d = json.loads(EXAMPLE.read_text())
    d["description"] = 'x </script><b onload="1">&'
    page = render_html(ex.load_spec(d), ex.explain(d))
    assert "</script><b" not in page and "&lt;/script&gt;&lt;b" in page
    assert _embedded(page)["description"] == d["description"]


def test_view_keeps_weights_before_and_the_edge_terms():
    spec = ex.load_example("2-2-2")
    result = ex.explain(spec, steps=3)
    v = view(spec, result)
    assert v["names"] == [["x0", "x1"], ["h0", "h1"], ["y0", "y1"]]
    assert [s["step"] for s in v["steps"]] == [0, 1, 2] and len(v["losses"]) == 3
    assert v["steps"][0]["layers"][0]["W_before"] == spec.layers[0].W.tolist()
    for s in (1, 2):
        for k in (0, 1):
            got, prev = v["steps"][s]["layers"][k], result["steps"][s - 1]["layers"][k]
            assert got["W_before"] == prev["W_after"] and got["b_before"] == prev["b_after"]
    r1 = v["steps"][1]["layers"][1]
    terms = np.asarray(v["steps"][1]["layers"][0]["a"])[:, :, None] * np.asarray(r1["W_before"])
    np.testing.assert_allclose(r1["terms"], terms, rtol=1e-15)
    np.testing.assert_allclose(np.sum(r1["terms"], axis=1) + r1["b_before"], r1["z"], rtol=1e-12)
    assert v["steps"][2]["loss_after"] == result["final_loss"]


def test_many_steps_keep_an_even_sample_and_every_loss():
    assert kept_steps(5) == [0, 1, 2, 3, 4]
    kept = kept_steps(10_000)
    assert len(kept) == MAX_VIEW_STEPS and kept[0] == 0 and kept[-1] == 9_999
    assert unit_names([3, 4, 5, 2])[1:3] == [["h1.0", "h1.1", "h1.2", "h1.3"],
                                             ["h2.0", "h2.1", "h2.2", "h2.3", "h2.4"]]
    spec = ex.load_example("2-2-1")
    v = view(spec, ex.explain(spec, steps=7), limit=3)
    assert [s["step"] for s in v["steps"]] == [0, 3, 6] and len(v["losses"]) == 7


@pytest.mark.parametrize("name", sorted(ex.list_examples()))
def test_diagram_shows_every_value_within_the_width(name):
    spec = ex.load_example(name)
    result = ex.explain(spec, steps=1)
    text = diagram(view(spec, result))
    assert max(map(len, text.splitlines())) <= WIDTH
    for r in result["steps"][0]["layers"]:
        for key in ("z", "a", "da", "delta"):
            for value in r[key][0]:
                assert f6(value) in text, (key, value)
        for key in ("dW", "W_after"):
            for value in np.ravel(r[key]):
                assert f6(value) in text, (key, value)
    assert "┌─ h0" in text and "x0→h0" in text


def test_diagram_of_a_wide_network_and_another_example():
    """6 inputs, 9 tanh units, 3 outputs, 2 examples; the trace made up (the diagram draws
    whatever it is given), so that no new shapes are compiled."""
    rng = np.random.default_rng(0)
    d = {"layers": [{"W": rng.normal(size=(6, 9)).round(3).tolist(), "activation": "tanh"},
                    {"W": rng.normal(size=(9, 3)).round(3).tolist(), "activation": "identity"}],
         "input": rng.normal(size=(2, 6)).round(3).tolist(),
         "target": rng.normal(size=(2, 3)).round(3).tolist(), "loss": "mse",
         "learning_rate": 0.1}
    spec = ex.load_spec(d)

    def made_up(i, o):
        return {"z": rng.normal(size=(2, o)).tolist(), "a": rng.normal(size=(2, o)).tolist(),
                "da": rng.normal(size=(2, o)).tolist(), "delta": rng.normal(size=(2, o)).tolist(),
                "dadz": rng.normal(size=(2, o)).tolist(),
                "dW": rng.normal(size=(i, o)).tolist(), "db": rng.normal(size=o).tolist(),
                "W_after": rng.normal(size=(i, o)).tolist(), "b_after": rng.normal(size=o).tolist()}

    result = {"steps": [{"loss": 1.5, "layers": [made_up(6, 9), made_up(9, 3)]}],
              "final_loss": 1.25}
    text = diagram(view(spec, result), example=1)
    assert max(map(len, text.splitlines())) <= WIDTH
    assert "example 1 of 2" in text and f6(result["steps"][0]["layers"][1]["z"][1][2]) in text
    assert "h8→y2" in text and "loss 1.500000 → 1.250000" in text


def test_cli_html_refuses_to_overwrite_and_diagram(tmp_path, capsys):
    page = tmp_path / "sub" / "out.html"
    assert main(["explain", "--example", "2-2-1", "--html", str(page)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and f"page written to {page}" in err
    first = page.read_text()
    assert "Classic 2-2-1" in first and not list(page.parent.glob(".*.tmp"))
    assert main(["explain", "--example", "2-2-2", "--html", str(page)]) == 2
    assert page.read_text() == first
    assert capsys.readouterr().err == (f"jaxprop: error: --html {page} already exists; replace "
                                       "it with --force (or give another --html)\n")
    assert main(["explain", "--example", "2-2-2", "--html", str(page), "--force",
                 "--diagram", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "Classic 2-2-2" in page.read_text() and out.count("Step ") == 2
    assert "Step 1/2" in out and "Step 2/2" in out
    spec = tmp_path / "spec.json"
    spec.write_text(EXAMPLE.read_text())
    assert main(["explain", str(spec), "--html", str(spec), "--force"]) == 2
    assert "is the input file SPEC.json" in capsys.readouterr().err
    assert main(["explain", "--example", "2-2-1", "--json", "--diagram"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["explain", "--example", "2-2-1", "--html", " "]) == 2
    assert "--html is empty" in capsys.readouterr().err


# ---- in a real browser -------------------------------------------------------------------


def _browser() -> str:
    found = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if found is None:
        pytest.skip("no Chromium found (apt-get install chromium): the page is not rendered")
    return found


def _chromium(browser: str, profile, *args: str) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", f"--user-data-dir={profile}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(browser: str, url: str, png, profile, size=(1400, 1000)) -> np.ndarray:
    """The page at ``url`` as pixels, ``(h, w, channels)`` in [0, 1]."""
    import matplotlib.pyplot as plt

    _chromium(browser, profile, f"--screenshot={png}", f"--window-size={size[0]},{size[1]}", url)
    return plt.imread(str(png))


@pytest.mark.long
def test_page_in_headless_chromium(tmp_path):
    browser = _browser()
    spec = ex.load_example("2-2-2")
    result = ex.explain(spec, steps=3)
    page = tmp_path / "page.html"
    page.write_text(render_html(spec, result))
    url = page.as_uri()
    profile = tmp_path / "profile"

    # the DOM at a phase of step 3 holds that step's numbers (its tables and the focus)
    dom = _chromium(browser, profile, "--dump-dom", url + "#step=3&phase=5")
    assert "step 3/3 · 5/11: forward y1" in dom
    r3 = result["steps"][2]["layers"]
    for value in (r3[1]["z"][0][1], r3[1]["a"][0][1], r3[0]["delta"][0][0], r3[1]["dW"][1][0],
                  r3[0]["W_after"][1][1], -r3[1]["delta"][0][0]):
        assert f6(value) in dom, value
    one = _chromium(browser, profile, "--dump-dom", url + "#step=1&phase=5")
    assert "step 1/3 · 5/11" in one and f6(result["steps"][0]["layers"][1]["z"][0][1]) in one
    assert f6(r3[1]["z"][0][1]) not in one  # another step, other numbers
    back = _chromium(browser, profile, "--dump-dom", url + "#step=3&phase=9")
    assert "Backward: unit h0" in back and "∂L/∂a_h0 = Σₖ" in back

    # the pixels: not blank, and the step control moves the picture
    shots = [screenshot(browser, url + f"#step={s}&phase={p}", tmp_path / f"{s}-{p}.png", profile)
             for s, p in ((1, 1), (1, 6), (1, 9), (3, 11))]
    for img in shots:
        assert img.ndim == 3 and img.shape[:2] == (1000, 1400)
        assert img[..., :3].std() > 0.05  # text, nodes and edges on a white page
        assert (img[..., :3] < 0.5).mean() > 0.005
    for a, b in zip(shots, shots[1:]):
        assert np.abs(a[..., :3] - b[..., :3]).mean() > 1e-4


@pytest.mark.long
def test_model_pages_in_headless_chromium(tmp_path):
    """A relu network from --model (no sigmoid, no textbook sign) and a conv + LayerNorm model
    drawn as tables: the DOM holds the numbers of the step shown, the step control moves."""
    browser = _browser()
    profile = tmp_path / "profile"
    spec = ex.from_model("dense(3)-relu-dense(2)", 2, loss="mse", learning_rate=0.5, steps=3)
    result = ex.explain(spec)
    page = tmp_path / "relu.html"
    page.write_text(render_html(spec, result))
    dom = _chromium(browser, profile, "--dump-dom", page.as_uri() + "#step=2&phase=10")
    assert "step 2/3 · 10/13: backward h0" in dom and "relu′(" in dom
    r2 = result["steps"][1]["layers"]
    biggest = lambda v: max(np.ravel(v), key=abs)  # noqa: E731 (a zero prints as -0.0 here)
    for value in (r2[0]["z"][0][0], biggest(r2[0]["dadz"][0]), biggest(r2[0]["delta"][0]),
                  r2[1]["da"][0][1], biggest(r2[0]["dW"]), r2[1]["W_after"][2][1]):
        assert f6(value) in dom, value
    shown = re.sub(r"<script.*?</script>", "", dom, flags=re.S)
    assert "textbook" not in shown  # mse: the articles' sign note does not apply
    shots = [screenshot(browser, page.as_uri() + f"#step={s}&phase={p}", tmp_path / f"r{s}{p}.png",
                        profile) for s, p in ((1, 1), (2, 10))]

    tables = ex.from_model("conv(3,2,padding=valid)-layernorm-flatten-dense(1)", (3, 3, 1),
                           steps=2)
    result = ex.explain(tables)
    page = tmp_path / "tables.html"
    page.write_text(render_html(tables, result))
    dom = _chromium(browser, profile, "--dump-dom", page.as_uri() + "#step=2&phase=3")
    assert "step 2/2 · 3/11: forward layers[1] layernorm" in dom
    ln = result["steps"][1]["layers"][1]
    for value in (ln["output"][1][1][0][2], ln["doutput"][0][0][1][0],
                  ln["params_after"]["scale"][2], result["steps"][1]["loss"]):
        assert f6(value) in dom, value
    one = _chromium(browser, profile, "--dump-dom", page.as_uri() + "#step=1&phase=3")
    assert "step 1/2 · 3/11" in one and f6(ln["output"][1][1][0][2]) not in one
    shots += [screenshot(browser, page.as_uri() + f"#step={s}&phase={p}",
                         tmp_path / f"t{s}{p}.png", profile) for s, p in ((1, 3), (2, 9))]
    for img in shots:
        assert img[..., :3].std() > 0.05 and (img[..., :3] < 0.5).mean() > 0.005
    for a, b in zip(shots, shots[1:]):
        assert np.abs(a[..., :3] - b[..., :3]).mean() > 1e-4
