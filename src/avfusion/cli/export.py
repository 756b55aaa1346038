"""`avfusion export --model DIR --out FILE [--format pt2|onnx] [--inputs av|audio|video] [--check]`.

Writes the model as one file that runs without avfusion: `torch.export` with a dynamic batch
dimension saved by `torch.export.save` (.pt2: `torch.export.load(FILE).module()(audio=..., video=...)`),
or ONNX through the torch exporter (run it with onnxruntime). Inputs are the model's tensors
(normalised log-mel `audio` (B, T_a, F), normalised frames `video` (B, 3, T, H, W)); outputs are
`logits` and `<head>_logits` per output. --inputs audio (or video) exports an audio-visual
model's audio-only (video-only) path. The config (classes, preprocessing) travels in the file.

--check runs the file (torch.export.load / onnxruntime) against the eager model on random
inputs at batch sizes 1 and 3 and prints the max abs logit error; above 1e-4 the command exits 1.
See docs/evaluation.md for which families and attention paths export.
"""

from __future__ import annotations

import argparse
import json
import sys

from avfusion.cli._common import parse_args


def main(argv: list[str] | None = None) -> int:
    from avfusion.infer.export import ATTN_PATHS, FORMATS, INPUT_SETS, export_format

    p = argparse.ArgumentParser(prog="avfusion export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="an avfusion model directory, a released model's name (avfusion "
                                                  "models --pretrained; downloaded and cached once) or hf-hub:ORG/NAME")
    p.add_argument("--out", required=True, help="the file to write (.pt2 or .onnx)")
    p.add_argument("--format", choices=FORMATS, help="default: from --out's suffix, any case (.onnx: onnx, else pt2); "
                                                     "a suffix of the other format is refused")
    p.add_argument("--inputs", choices=list(INPUT_SETS), help="the modalities the file takes (default: the model's)")
    p.add_argument("--attn", choices=ATTN_PATHS, default="split",
                   help="attention path traced into the file (default split; flex does not export)")
    p.add_argument("--check", action="store_true", help="compare the file with the eager model (max abs error)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parse_args(p, argv)
    fmt = export_format(args.out, args.format)  # --out model.ONNX is onnx; --format pt2 --out x.onnx is refused
    from avfusion.infer.export import check_export, export_model, resolve_inputs
    from avfusion.models.pretrained import load_pretrained
    from avfusion.zoo import resolve_model

    model_dir = resolve_model(args.model)

    model = load_pretrained(model_dir, map_location="cpu", attn_impl=args.attn)
    inputs = resolve_inputs(model.cfg.modalities, args.inputs)
    result = export_model(model, args.out, fmt, inputs, args.attn)
    if args.check:
        check_export(model, result)
    if args.json:
        print(json.dumps(result.to_dict(), allow_nan=False))
    else:
        print(f"wrote {result.path} ({fmt}; inputs {', '.join(result.inputs)}; outputs {', '.join(result.outputs)})")
        if result.check:
            c = result.check
            print(f"check against the eager model (batch {', '.join(map(str, c['batches']))}): max abs error "
                  f"{c['max_abs_error']:.3g} (tolerance {c['tolerance']:g}): {'ok' if result.passed else 'FAILED'}")
    if result.check and not result.passed:
        print(f"avfusion export: the exported file differs from the eager model by {result.check['max_abs_error']:.3g} "
              f"(more than {result.check['tolerance']:g})", file=sys.stderr)
        return 1
    return 0
