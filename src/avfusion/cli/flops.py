"""`avfusion flops MODEL [--json] [key=value ...]`: parameters and GFLOPs of one forward pass.

One multiply-add counts as one FLOP (the ViViT / MBT convention: XLA's cost analysis / 2).
"""

from __future__ import annotations

import argparse

from avfusion.cli._common import parse_args, print_json, print_table
from avfusion.models import get_model_config, list_models
from avfusion.core.config import MODALITIES
from avfusion.models.flops import count_flops
from avfusion.utils.dataclass_config import parse_overrides


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="avfusion flops", description=__doc__)
    p.add_argument("model", help="a registered model name or a shell pattern ('mbt_base*')")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. fusion_layer=4 num_bottlenecks=8")
    p.add_argument("--modalities", default="audio,video", help="inputs to count (default: audio,video)")
    p.add_argument("--json", action="store_true", help="end with one JSON line per model")
    args = parse_args(p, argv)
    names = list_models(args.model) if any(ch in args.model for ch in "*?[") else [args.model]
    if not names:
        p.error(f"no model matches {args.model!r}")
    modalities = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    if not modalities or not set(modalities) <= set(MODALITIES):
        p.error(f"--modalities must be a comma list of {', '.join(MODALITIES)}, got {args.modalities!r}")
    overrides = parse_overrides(args.overrides)
    # The config is built first, so an override named like a count_flops argument is still a config key.
    reports = [count_flops(get_model_config(n, **overrides), modalities=modalities) for n in names]
    rows = [{"model": r.name, "params (M)": f"{r.params / 1e6:.1f}", "GFLOPs": f"{r.gflops:.1f}",
             "inputs": " ".join(f"{k}{tuple(v[1:])}" for k, v in r.inputs.items())} for r in reports]
    print_table(rows, ["model", "params (M)", "GFLOPs", "inputs"])
    if args.json:
        for r in reports:
            print_json(r.to_dict())
    return 0
