"""`avfusion predict VIDEO... [--model DIR] [--top-k K] [--json]`: top labels per output.

Without --model, the model the demo trained last (runs/demo/best) is used. A file without an
audio stream gets the model's video-only outputs (and vice versa), and the output says so. A
damaged file (truncated, packets that fail to decode) is answered from what decodes, and the
notes (and "coverage" in --json) say how much was padding or lost; a file with nothing
decodable is an error for that file (exit status 1), the other files are still answered.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from avfusion.errors import InputError, UserError
from avfusion.utils.cli_args import device_arg, int_at_least

DEFAULT_MODEL = Path("runs/demo/best")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="avfusion predict", description=__doc__)
    p.add_argument("videos", nargs="+", help="video files (anything PyAV decodes)")
    p.add_argument("--model", help=f"an avfusion model directory (default: {DEFAULT_MODEL})")
    p.add_argument("--top-k", type=int_at_least(1), default=5)
    p.add_argument("--clips", type=int_at_least(1), default=4, help="clips averaged per file")
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu (default) | auto | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    args = p.parse_args(argv)
    model_dir = Path(args.model) if args.model else DEFAULT_MODEL
    if not model_dir.is_dir():
        raise InputError(f"no model directory {str(model_dir)!r}: pass --model DIR (or run `make demo` "
                                f"to train the default one)")

    from avfusion.eval.predict import predict_file
    from avfusion.models.pretrained import load_pretrained

    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_pretrained(model_dir, map_location=device)
    status = 0
    for video in args.videos:
        try:
            res = predict_file(model, video, args.top_k, args.clips)
        except (UserError, OSError) as e:  # one bad file does not stop the rest: it is named, exit 1
            res = {"path": video, "error": str(e)}
            status = 1
        if args.json:
            print(json.dumps(res, allow_nan=False))  # predict_file made the scores strict JSON
            continue
        print(f"{video}:")
        if "error" in res:
            print(f"  error: {res['error']}")
            continue
        for note in res["notes"]:
            print(f"  note: {note}")
        for output, labels in res["outputs"].items():
            top = ", ".join(f"{e.get('head', '') + ':' if 'head' in e else ''}{e['label']} "
                            + ("n/a" if e["score"] is None else f"{e['score']:.2f}") for e in labels)
            print(f"  {output:<7} {top}")
    return status
