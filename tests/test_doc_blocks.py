"""Every ```python block of README.md and docs/*.md runs as written: a page's blocks in order in
one fresh namespace, in a process of its own (examples may change JAX's settings, e.g.
`jp.enable_compilation_cache()`) and a temporary working folder (files they write land there).

docs/layers.md and docs/gradcheck.md are run by tests/test_docs.py and
tests/test_docs_gradcheck.py, which also check what their blocks compute and print."""

import os
import subprocess
import sys

import pytest
from doc_blocks import PAGES, ROOT, python_blocks

RUN_ELSEWHERE = {"docs/layers.md", "docs/gradcheck.md"}


def test_every_page_is_run_here_or_by_its_own_test():
    assert RUN_ELSEWHERE <= set(PAGES) and "README.md" in PAGES
    assert all(python_blocks(page) for page in RUN_ELSEWHERE)


@pytest.mark.long
@pytest.mark.parametrize("page", [page for page in PAGES if page not in RUN_ELSEWHERE])
def test_the_python_blocks_of_a_page_run_as_written(page, tmp_path):
    assert python_blocks(page), f"{page} has no python block: drop it from PAGES"
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "JAX_PLATFORMS": "cpu",
           "JAXPROP_COMPILATION_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", f"import doc_blocks; doc_blocks.run_blocks({page!r})"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 0, "\n".join(lines[-1:] + ["", *lines[-25:]])
