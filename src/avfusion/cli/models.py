"""`avfusion models [PATTERN] [--json]`: list the registered models with their scheme and sizes.

`avfusion models --pretrained [PATTERN] [--json]`: the released weights that `--model NAME` and
`create_model(NAME, pretrained=True)` load (the official MBT checkpoints): inputs, training set,
mAP, whether they are in the cache ($AVFUSION_HOME) and where they come from (docs/convert.md
"Pretrained models"). --json adds the licence, the pinned sha256 and the citation."""

from __future__ import annotations

import argparse

from avfusion.cli._common import parse_args, print_json, print_table
from avfusion.models import get_model_config, list_models


def describe(name: str) -> dict:
    c = get_model_config(name)
    scheme = {"streams": {"bottleneck": "MBT bottleneck", "xattn": "mid fusion, cross-attention",
                          "concat": "early fusion" if c.fusion_layer == 0 else "mid fusion, shared"},
              "masked": {"zorro": "Zorro", "bottleneck_mask": "bottleneck masking",
                         "all": "input-level fusion", "unimodal": "independent streams"},
              "swin": {"zorro": "Zorro-Swin"}, "hip": {"zorro": "Zorro-HiP"}}
    label = scheme.get(c.family, {}).get(c.fusion, c.fusion)
    if len(c.modalities) == 1:
        label = f"{c.modalities[0]} only"
    elif c.family == "streams" and c.fusion_layer == c.depth:
        label = "late fusion"
    return {"model": name, "family": c.family, "scheme": label, "fusion_layer": c.fusion_layer,
            "width": c.embed_dim, "depth": c.depth, "video": f"{c.num_frames}x{c.image_size[0]}x{c.image_size[1]}",
            "audio": f"{c.spec_size[0]}x{c.spec_size[1]}", "classes": c.num_classes}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="avfusion models", description=__doc__)
    p.add_argument("pattern", nargs="?", default=None, help="shell-style filter, e.g. 'mbt_*'")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument("--pretrained", action="store_true",
                   help="list the released weights (--model NAME / create_model(NAME, pretrained=True))")
    args = parse_args(p, argv)
    if args.pretrained:
        return _pretrained(p, args)
    names = list_models(args.pattern)
    if not names:
        p.error(f"no model matches {args.pattern!r} (`avfusion models` lists all)")
    rows = [describe(n) for n in names]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["model", "scheme", "fusion_layer", "width", "depth", "video", "audio", "classes"])
    return 0


def _pretrained(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from avfusion.zoo import get_pretrained_cfg, home, list_pretrained

    names = list_pretrained(args.pattern)
    if not names:
        p.error(f"no pretrained model matches {args.pattern!r} (`avfusion models --pretrained` lists all)")
    cfgs = [get_pretrained_cfg(n) for n in names]
    if args.json:
        print_json([{**c.describe(), "citation": c.citation} for c in cfgs])
        return 0
    rows = [{**(d := c.describe()), "mAP": f"{c.map:.1f}", "cached": "yes" if d["cached"] else "no"} for c in cfgs]
    print_table(rows, ["name", "inputs", "dataset", "mAP", "video", "audio", "classes", "cached"])
    print(f"\ncache: {home()} (AVFUSION_HOME); from {cfgs[0].url.rsplit('/', 1)[0]}/ (AVFUSION_ZOO_URL); "
          f"MBT-B/16x2 (Nagrani et al., NeurIPS 2021), licence: {cfgs[0].licence}")
    return 0
