"""`avfusion validate MANIFEST --labels LABELS [--json]`: check every row, print the problems.

Every row is checked as `avfusion prepare` would use it (the same function decides, from the same
decode of the range its clips can read): file, streams and their timeline, truncation and
damage, labels, ids; malformed manifest lines are listed with their line numbers.
Exit status: 1 when any row has an error, 0 otherwise (warnings and notes do not fail), 2 when
the manifest or label map cannot be read at all."""

from __future__ import annotations

import argparse
import json
import sys

from avfusion.cli._common import parse_args
from avfusion.cli._data_args import add_common, clip_config, progress
from avfusion.data.manifest import LabelMap, check_manifest
from avfusion.data.validate import format_table, summary, validate_rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="avfusion validate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--no-decode", action="store_true",
                   help="read the streams' timeline only; skip decoding (misses truncation and damage)")
    a = parse_args(p, argv)
    labels = LabelMap.read(a.labels, a.task)
    rows, bad_lines = check_manifest(a.manifest)
    probs = validate_rows(rows, labels, clip_config(a), not a.no_decode, progress(a, "validate"), bad_lines)
    s = summary(rows, probs, len(bad_lines))
    if a.json:
        print(json.dumps(s, indent=1, allow_nan=False))
    else:
        print(format_table(probs))
        print(f"\n{s['rows']} rows: {s['rows_with_errors']} with errors, "
              f"{s['errors']} errors, {s['warnings']} warnings, {s['notes']} notes")
    return 1 if s["errors"] else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
