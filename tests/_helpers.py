"""Helpers shared by test modules."""

from __future__ import annotations

import sys


def run_cli(args: list, monkeypatch, capsys) -> tuple[int, str, str]:
    """Run the CLI in-process (as the console script would): (exit code, stdout, stderr)."""
    from transferlab.cli import main

    monkeypatch.setattr(sys, "argv", ["transferlab", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    o = capsys.readouterr()
    return code, o.out, o.err
