"""The ```python blocks of the README and docs/*.md, and running a page's blocks in order in one
namespace, as a reader would paste them (tests/test_doc_blocks.py, tests/test_docs.py)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```\s*$", re.S | re.M)


def python_blocks(page: str) -> list[tuple[int, str]]:
    """``[(line, code), ...]``: each ```python block of ``page`` and the line its code starts on."""
    text = (ROOT / page).read_text()
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def run_blocks(page: str, namespace: dict | None = None) -> dict:
    """Run every python block of ``page`` in order in ``namespace`` (a fresh one by default).

    A block that raises fails with an AssertionError naming the page, the block's line and its
    first line of code."""
    namespace = {"__name__": "__doc_example__"} if namespace is None else namespace
    for line, code in python_blocks(page):
        try:
            exec(compile("\n" * (line - 1) + code, str(ROOT / page), "exec"), namespace)  # noqa: S102
        except Exception as e:
            first = code.strip().splitlines()[0]
            raise AssertionError(f"{page}, the block at line {line} ({first!r}) raised "
                                 f"{type(e).__name__}: {e}") from e
    return namespace
