"""`avfusion convert`: turn released weights into an avfusion model directory.

    avfusion convert scenic-mbt CKPT [--fusion-layer N] --out DIR [--num-frames T] [--image-size H W]
                                     [--spec-size TIME MEL] [--labels class_labels_indices.csv]

Sizes are read from the checkpoint's parameter shapes; the fusion layer (behaviour) must be
given for an RGB+spectrogram checkpoint (a unimodal Spec-only / RGB-only one needs none); input
sizes are checked against the position-embedding lengths (docs/convert.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from avfusion.cli._common import parse_args
from avfusion.convert.scenic_mbt import DEFAULT_IMAGE_SIZE, DEFAULT_NUM_FRAMES, DEFAULT_SPEC_SIZE
from avfusion.errors import ConfigError, InputError


def _read_labels(path: str) -> list[str]:
    """Class names from AudioSet's ``class_labels_indices.csv`` layout (index,mid,display_name)
    or a plain text file with one name per line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"--labels {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if p.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or "display_name" not in rows[0] or "index" not in rows[0]:
            raise InputError(f"--labels {path}: expected columns index,mid,display_name")
        bad = next((r for r in rows if not (r["index"] or "").strip().isdigit()), None)
        if bad is not None:
            raise InputError(f"--labels {path}: index {bad['index']!r} of {bad['display_name']!r} "
                             "is not a whole number")
        return [r["display_name"] for r in sorted(rows, key=lambda r: int(r["index"]))]
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise InputError(f"--labels {path}: no class names in it")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avfusion convert", description="Turn released weights into an avfusion model directory.",
        epilog="example (the released MBT AudioSet model, docs/convert.md): avfusion convert scenic-mbt "
               "mbtb32_as-500k_rgb-spec --fusion-layer 8 --labels class_labels_indices.csv --out models/mbt_as500k; "
               "a Spec-only / RGB-only checkpoint needs no --fusion-layer: avfusion convert scenic-mbt SPEC_ONLY_CKPT "
               "--labels class_labels_indices.csv --out models/mbt_as500k_spec")
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    p = sub.add_parser(
        "scenic-mbt", help="an official scenic MBT checkpoint (flax msgpack)",
        description="Convert an official scenic MBT checkpoint. Hidden size, layers, heads, MLP width, "
                    "patch/tubelet sizes, bottleneck count, classes, shared/per-modality weights and the "
                    "modalities (RGB+spectrogram, or one of them: the released Spec-only / RGB-only models) are "
                    "read from parameter shapes.",
    )
    p.add_argument("checkpoint", help="flax msgpack checkpoint (scenic train state or params tree)")
    p.add_argument("--fusion-layer", type=int, default=None, metavar="N",
                   help="scenic's model.fusion_layer (Lf): first layer where modalities meet; "
                        "0 = early fusion, number of layers = late fusion. Required for an RGB+spectrogram "
                        "checkpoint; optional and ignored for a unimodal one (modality_fusion=('spectrogram',) "
                        "or ('rgb',), the released Spec-only / RGB-only models), which never fuses: it converts "
                        "to a one-stream model with fusion_layer = number of layers")
    p.add_argument("--out", required=True, help="output model directory (model.safetensors + config.json)")
    p.add_argument("--num-frames", type=int, default=None,
                   help=f"frames per clip the checkpoint was trained on (default {DEFAULT_NUM_FRAMES}); "
                        "video sizes are unused for a Spec-only checkpoint, --spec-size for an RGB-only one")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help=f"frame crop size (default {DEFAULT_IMAGE_SIZE[0]} {DEFAULT_IMAGE_SIZE[1]})")
    p.add_argument("--spec-size", type=int, nargs=2, metavar=("TIME", "MEL"), default=None,
                   help=f"log-mel frames x mel bins (default {DEFAULT_SPEC_SIZE[0]} {DEFAULT_SPEC_SIZE[1]})")
    p.add_argument("--labels", default=None,
                   help="class names: class_labels_indices.csv (index,mid,display_name) or one name per line")
    p.add_argument("--test-without-bottlenecks", action="store_true",
                   help="scenic's test_with_bottlenecks=False: evaluate a bottleneck model with every layer "
                        "unimodal (the released models use the default, with bottlenecks)")
    p.add_argument("--name", default="mbt_scenic", help="model name stored in config.json")
    p.add_argument("--force", action="store_true", help="overwrite an existing model directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    from avfusion.convert.scenic_mbt import convert_scenic_mbt_with_notes
    from avfusion.models.pretrained import CONFIG_NAME, WEIGHTS_NAME, save_pretrained

    out = Path(args.out)
    # Refused before the (slow) conversion; a failure inside it is a UserError or OSError, which
    # `avfusion` (avfusion/cli/__init__.py) reports as one line.
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    if (out / WEIGHTS_NAME).exists() and not args.force:
        raise ConfigError(f"--out {out} already holds a model; pass --force to overwrite")
    class_names = _read_labels(args.labels) if args.labels else None
    model, notes = convert_scenic_mbt_with_notes(
        args.checkpoint, args.fusion_layer, num_frames=args.num_frames,
        image_size=tuple(args.image_size) if args.image_size else None,
        spec_size=tuple(args.spec_size) if args.spec_size else None,
        name=args.name, class_names=class_names, test_with_bottlenecks=not args.test_without_bottlenecks,
    )
    save_pretrained(model, out, metadata={"source": "scenic-mbt", "checkpoint": Path(args.checkpoint).name})
    c = model.cfg
    if len(c.modalities) == 1:
        rows = [
            ("modality", f"{c.modalities[0]} only (unimodal: no fusion, {c.depth} layers, logits = "
                         f"{c.modalities[0]} head)"),
        ]
    else:
        rows = [
            ("fusion", f"{c.fusion} from layer {c.fusion_layer} of {c.depth}"
                       + (f", {c.num_bottlenecks} (+1) bottleneck tokens" if c.fusion == "bottleneck" else "")),
            ("weights", "shared by both modalities" if c.share_weights else "per modality"),
        ]
    rows.append(("width", f"{c.embed_dim}, {c.num_heads} heads, MLP {c.mlp_dim}"))
    if "video" in c.modalities:
        rows.append(("video", f"{c.num_frames} x {c.image_size[0]} x {c.image_size[1]} frames "
                              f"in {'x'.join(map(str, c.tubelet))} tubelets"))
    if "audio" in c.modalities:
        rows.append(("audio", f"{c.spec_size[0]} x {c.spec_size[1]} log-mel in "
                              f"{'x'.join(map(str, c.spec_patch))} patches"))
    rows += [
        ("classes", f"{c.num_classes}" + ("" if c.class_names else " (no names; pass --labels)")),
        ("parameters", f"{model.num_params():,}"),
    ]
    rows += [("note", n) for n in notes]
    rows.append(("written", f"{out / WEIGHTS_NAME}, {out / CONFIG_NAME}"))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    record = {"source": "scenic-mbt", "checkpoint": str(args.checkpoint), "modalities": list(c.modalities),
              "fusion_layer": c.fusion_layer, **{k: v for k, v in rows if k != "note"}, "notes": notes}
    (out / "convert.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from avfusion.cli import main as avfusion_main  # its one-line errors and --debug

    sys.exit(avfusion_main(["convert", *sys.argv[1:]]))
