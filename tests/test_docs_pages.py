"""The documentation pages: every example runs, every shell block says whether the tests run
it, and every relative link points at a file that exists (``tests/support/pages.py``).

A page runs in the session of the heaviest backend it needs (``<!-- needs: jax -->`` in
tests-jax, torch in tests-torch, the rest in tests-numpy), so no page runs twice in CI.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from pages import blocks, links, needs, run_page

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(ROOT).as_posix() for p in [ROOT / "README.md", *DOCS.rglob("*.md")] if p.is_file())


def _session(modules: list[str]) -> str:
    return "jax" if "jax" in modules else "torch" if "torch" in modules else "numpy"


def _text(page: str) -> str:
    return (ROOT / page).read_text(encoding="utf-8")


def test_there_are_pages():
    if not DOCS.is_dir():
        pytest.skip("docs/ is not beside the tests (installed-package run)")
    assert len(PAGES) > 10 and "docs/index.md" in PAGES


@pytest.mark.parametrize("page", [p for p in PAGES if p != "README.md"])  # README: tests/core/test_docs.py
def test_page_examples_run(page, tmp_path):
    text = _text(page)
    modules = needs(text)
    wanted = os.environ.get("DDPM_TEST_BACKENDS")
    if wanted and _session(modules) not in {w.strip() for w in wanted.split(",")}:
        pytest.skip(f"runs in the tests-{_session(modules)} session")
    for name in modules:
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"needs {name}")
    ran, failures = run_page(ROOT / page, tmp_path)
    assert not failures, failures[0]
    assert ran or not any(b.lang == "python" and ">>>" in b.text or b.mark == "run" for b in blocks(text))


@pytest.mark.parametrize("page", PAGES)
def test_every_shell_block_is_run_or_says_why_not(page):
    unmarked = [b.line for b in blocks(_text(page)) if b.lang in ("bash", "sh", "console", "shell") and not b.mark]
    assert not unmarked, f"{page}: shell blocks at lines {unmarked} need <!-- run --> or <!-- not run: why -->"
    loose = [b.line for b in blocks(_text(page)) if b.lang in ("sh", "console", "shell")]
    assert not loose, f"{page}: shell blocks at lines {loose} must be ```bash"


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_point_at_files(page):
    base = (ROOT / page).parent
    missing = [t for t in links(_text(page)) if t and not (base / t).exists()]
    assert not missing, f"{page} links files that do not exist: {missing}"
