"""What commands print and write: strict JSON (no NaN), plain aligned tables.

Below every package that reports (eval, infer, train, demo, cli), so each can use them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch


def json_safe(obj: Any) -> Any:
    """A copy of a report that strict JSON can hold: NaN and +-inf become None, tensors lists."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return json_safe(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


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
