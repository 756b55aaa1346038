"""Helpers shared by the subcommands: argument parsing, tables and JSON output."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Every subcommand's parsing: options may stand anywhere among the positionals
    (``avfusion train c.yaml --max-steps 10 run.seed=1``). A parser with subcommands (convert)
    parses them itself: argparse cannot intermix there, and its positionals are fixed."""
    if parser._subparsers is not None:  # noqa: SLF001 - argparse has no public way to ask
        return parser.parse_args(argv)
    return parser.parse_intermixed_args(argv)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """A plain, aligned text table."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def print_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=False, allow_nan=False))  # --json output is strict JSON
