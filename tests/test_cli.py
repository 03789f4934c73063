"""The command line: every command documented, and the package's public surface honest."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import harness
from harness.cli import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"


def _commands() -> list[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(sub.choices)


def test_every_command_is_documented_in_the_readme() -> None:
    """Each subcommand appears in the README as `trialbench <command>`, so docs cannot drift."""
    text = README.read_text()
    missing = [c for c in _commands() if f"trialbench {c}" not in text]
    assert not missing
    assert "make demo" in text and "make test" in text


def test_python_dash_m_harness_is_the_same_command() -> None:
    """``python -m harness --help`` lists the same commands as the parser."""
    done = subprocess.run([sys.executable, "-m", "harness", "--help"], capture_output=True,
                          text=True, check=True, timeout=60)
    for command in _commands():
        assert command in done.stdout


def test_all_is_sorted_and_exported() -> None:
    """The package's ``__all__`` is sorted and every name in it exists."""
    assert harness.__all__ == sorted(harness.__all__)
    for name in harness.__all__:
        assert hasattr(harness, name)
