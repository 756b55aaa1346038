"""The run folder (``--out``): the metrics log on resume. Its lock is avfusion.utils.lock's
(``OUT/.lock``, the same for every command); durable writes are avfusion.utils.files'."""

from __future__ import annotations

import json
from pathlib import Path

from avfusion.utils.files import atomic_write

# --------------------------------------------------------------------------- metrics log

def trim_metrics(path: Path, last_step: int) -> None:
    """Keep one row per step <= ``last_step`` in a metrics.jsonl (the last one written for a step).

    A resumed run logs the steps after its checkpoint again; a kill can leave a torn last line.
    The file is rewritten atomically, and only when something changes."""
    if not path.is_file():
        return
    lines = path.read_bytes().splitlines(keepends=True)
    rows: dict[int, bytes] = {}
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        step = row.get("step") if isinstance(row, dict) else None
        if isinstance(step, int) and step <= last_step:
            rows[step] = line if line.endswith(b"\n") else line + b"\n"
    keep = [rows[s] for s in sorted(rows)]
    if keep != lines:
        atomic_write(path, b"".join(keep))
