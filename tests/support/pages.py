"""Run a Markdown page's examples in order: its Python doctests and its marked shell blocks.

A page (README.md or any ``docs/**/*.md``) holds three kinds of fenced blocks:

- ```` ```python ```` blocks with ``>>>`` prompts: doctests. All of a page's doctests share one
  namespace and run in page order, so a tutorial is one script.
- ```` ```bash ```` blocks, each right after an HTML comment that says what the test does with
  it: ``<!-- run -->`` (run with ``bash -euo pipefail`` in the page's working folder, after
  the blocks above it), or ``<!-- not run: why -->`` (installs, a GPU, minutes of training).
- anything else (```` ```text ````, tables of output) is shown, not run.

``<!-- needs: torch, sklearn -->`` anywhere on a page names the modules its examples import;
the test of a page that needs a missing module is skipped.
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
MARK = re.compile(r"<!--\s*(run|not run:[^>]*?)\s*-->\s*\Z")
NEEDS = re.compile(r"<!--\s*needs:\s*([^>]*?)\s*-->")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # 1-based line of the block's first line of code
    mark: str  # "run", "not run: ...", or "" (no marker)


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a page, in order, with the marker comment right before each."""
    out = []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip() + "\n"
        mark = MARK.search(before.rstrip())
        out.append(Block(m.group(1), m.group(2), text.count("\n", 0, m.start(2)) + 1,
                         mark.group(1) if mark else ""))
    return out


def needs(text: str) -> list[str]:
    """The modules a page's examples import (its ``<!-- needs: ... -->`` comments)."""
    return [name.strip() for m in NEEDS.finditer(text) for name in m.group(1).split(",") if name.strip()]


def links(text: str) -> list[str]:
    """Relative link and image targets of a page (no URLs, no in-page anchors), anchors cut."""
    targets = []
    for m in LINK.finditer(text):
        target = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def run_page(page: Path, workdir: Path) -> tuple[int, list[str]]:
    """Run ``page``'s doctests and ``<!-- run -->`` shell blocks in order, in ``workdir``.

    Returns the number of examples and commands run, and one message per failure.
    """
    text = page.read_text(encoding="utf-8")
    parser, globs = doctest.DocTestParser(), {"__name__": "__page__"}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    env = dict(os.environ, PATH=os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", ""))))
    ran, failures = 0, []
    old = Path.cwd()
    os.chdir(workdir)
    try:
        for b in blocks(text):
            where = f"{page.name}:{b.line}"
            if b.lang == "python" and ">>>" in b.text:
                test = parser.get_doctest(b.text, globs, where, str(page), b.line - 1)
                out: list[str] = []
                result = runner.run(test, out=out.append, clear_globs=False)
                globs = test.globs  # DocTest ran on a copy: the next block continues from it
                ran += result.attempted
                if result.failed:
                    failures.append(f"{where}: doctest failed\n{''.join(out)[-3000:]}")
                    break
            elif b.lang == "bash" and b.mark == "run":
                proc = subprocess.run(["bash", "-euo", "pipefail", "-c", b.text], env=env, capture_output=True,
                                      text=True, timeout=900)
                ran += 1
                if proc.returncode:
                    failures.append(f"{where}: exit status {proc.returncode}\n{(proc.stdout + proc.stderr)[-3000:]}")
                    break
    finally:
        os.chdir(old)
    return ran, failures
