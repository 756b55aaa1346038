"""Helpers shared by the subcommands: argument parsing; tables and JSON output (re-exported from
avfusion.utils.output, where the layers below the CLI find them)."""

from __future__ import annotations

import argparse

from avfusion.utils.output import print_json, print_table

__all__ = ["parse_args", "print_json", "print_table"]


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Every subcommand's parsing: options may stand anywhere among the positionals
    (``avfusion train c.yaml --max-steps 10 run.seed=1``). A parser with subcommands (convert)
    parses them itself: argparse cannot intermix there, and its positionals are fixed."""
    if parser._subparsers is not None:  # noqa: SLF001 - argparse has no public way to ask
        return parser.parse_args(argv)
    return parser.parse_intermixed_args(argv)
