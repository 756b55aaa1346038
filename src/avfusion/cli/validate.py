"""`avfusion validate MANIFEST --labels LABELS [--json]`: check every row, print the problems.

Exit status: 1 when any row has an error, 0 otherwise (warnings do not fail)."""

from __future__ import annotations

import argparse
import json
import sys

from avfusion.cli._data_args import add_common, clip_config, progress
from avfusion.data.manifest import LabelMap, ManifestError, read_manifest
from avfusion.data.validate import format_table, summary, validate_rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="avfusion validate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--no-decode", action="store_true", help="probe only; skip the decoding check")
    a = p.parse_args(argv)
    try:
        labels = LabelMap.read(a.labels, a.label_mode)
        rows = read_manifest(a.manifest)
    except (OSError, ManifestError) as e:
        print(f"avfusion validate: {e}", file=sys.stderr)
        return 2
    probs = validate_rows(rows, labels, clip_config(a), not a.no_decode, progress(a, "validate"))
    s = summary(rows, probs)
    if a.json:
        print(json.dumps(s, indent=1))
    else:
        print(format_table(probs))
        print(f"\n{s['rows']} rows: {s['rows_with_errors']} with errors, "
              f"{s['errors']} errors, {s['warnings']} warnings")
    return 1 if s["errors"] else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
