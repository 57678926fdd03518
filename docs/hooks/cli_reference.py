"""MkDocs hook: the ``ddpm`` command's reference, generated from its argparse parser.

``<!-- ddpm-cli -->`` in a page becomes one section per subcommand (nested ones too, such as
``ddpm eval fid``) with its ``--help`` text, so the page cannot drift from the parser.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

MARK = "<!-- ddpm-cli -->"


def _commands(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:  # argparse keeps its subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _commands(child, f"{name} {sub}")


def cli_reference() -> str:
    """Markdown: a section per ``ddpm`` subcommand with its help, in the parser's order."""
    from ddpm_core.app.cli.parser import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal; the page should not
    parts = []
    for name, parser in _commands(build_parser(), "ddpm"):
        parser.prog = name
        parts += [f"## `{name}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    return markdown.replace(MARK, cli_reference()) if MARK in markdown else markdown
