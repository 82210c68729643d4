"""docs/gradcheck.md runs as written and shows what the code prints (numbers aside)."""

import contextlib
import io
import re
from pathlib import Path

import pytest

from jaxprop.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "gradcheck.md"
NUMBER = re.compile(r"\d\.\de[+-]\d\d")


def masked(text: str) -> list[str]:
    """Non-empty lines, numbers in scientific notation replaced, trailing spaces dropped."""
    return [NUMBER.sub("#", line).rstrip() for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def doc():
    text = DOC.read_text()
    blocks = re.findall(r"^```(\w*)\n(.*?)^```\s*$", text, re.S | re.M)
    code = [body for lang, body in blocks if lang == "python"]
    outputs = [body for lang, body in blocks if not lang]
    return text, code, outputs


@pytest.mark.long
def test_python_examples_print_what_the_doc_shows(doc):
    _, code, outputs = doc
    assert len(code) == 5
    ns, printed = {}, []
    for block in code:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, str(DOC), "exec"), ns)  # noqa: S102 - our own documentation
        printed.append(out.getvalue())
    assert masked(printed[0]) == masked(outputs[0])
    assert masked(printed[1]) == masked(outputs[1])
    # the input draws (Swish) and check_vjp (log-sum-exp, straight-through) examples
    assert masked(printed[2]) == masked(outputs[3])
    assert masked(printed[3]) == masked(outputs[4])
    second_order = next(o for o in outputs if "second order" in o)
    assert masked(printed[4]) == masked(second_order)
    assert not ns["report"].ok


def test_command_line_example_prints_what_the_doc_shows(doc, tmp_path, capsys, monkeypatch):
    _, code, outputs = doc
    layer_code = code[0].split("report = ")[0]
    make_model = ("\ndef make_model():\n    return jp.serial(jp.Dense(16), jp.Tanh(), Scale(), "
                  "jp.Dense(3), in_shape=(8,))\n")
    (tmp_path / "my_layers.py").write_text(layer_code + make_model)
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--model", "my_layers.py:make_model"]) == 1
    shown = outputs[2].split("$ jaxprop check --model my_layers.py:make_model\n")[1]
    shown = shown.split("$ echo")[0]
    assert masked(capsys.readouterr().out) == masked(shown)
