"""`avfusion eval --model DIR --data MANIFEST|SHARDS [--labels LABELS] [--json]`.

The papers' protocol: K uniformly spaced clips x 3 crops per video, logits averaged per video;
metrics for `logits` and for every output head (audio, video, fusion, global); and, for
audio-visual models, the same with only audio and only video given. Writes eval.json and plots
(per-class AP for multi-label sets, a confusion matrix for single-label sets) to --out.

A file that cannot be used (missing, unreadable, no decodable stream) stops the evaluation with
one line naming it; --skip-bad leaves such files out and lists them. Damaged files (truncated,
packets that fail to decode) are evaluated on what decodes; eval.json's "inputs" lists them, with
each file's damage, notes and padding share.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from avfusion.cli._common import print_table
from avfusion.utils.cli_args import device_arg, int_at_least


def table_rows(report: dict) -> list[dict]:
    rows = []
    for cond, res in report["conditions"].items():
        for output, metrics in res.get("outputs", {}).items():
            row = {"condition": cond, "output": output, "videos": res["num_videos"], "skipped": res["skipped"]}
            if report["task"] == "multilabel":
                row.update(mAP=metrics.get("mAP"), d_prime=metrics.get("d_prime"))
            elif report["task"] == "single":
                row.update(top1=metrics.get("top1"), top5=metrics.get("top5"))
            else:
                for head in ("verb", "noun", "action"):
                    row[f"{head} top1"] = (metrics.get(head) or {}).get("top1")
            rows.append({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    return rows


def inputs_summary(inputs: dict) -> list[str]:
    """One line per kind of input trouble (the files are listed in eval.json under "inputs")."""
    lines = []
    if inputs.get("skipped"):
        lines.append(f"skipped {len(inputs['skipped'])} file(s) that cannot be used (--skip-bad)")
    if inputs.get("damage"):
        lines.append(f"{len(inputs['damage'])} damaged file(s) evaluated on what decodes")
    heavy = [i for i, p in inputs.get("padded", {}).items() if max(p.values()) >= 0.1]
    if heavy:
        lines.append(f"{len(heavy)} file(s) with >= 10% padding in a modality")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="avfusion eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="an avfusion model directory")
    p.add_argument("--data", required=True,
                   help="a manifest (CSV / JSONL) or shards: a folder from `avfusion prepare`, a .tar, a brace "
                        "pattern, URLs joined with ::, or a pipe:/http URL")
    p.add_argument("--labels", help="label map (index,mid,display_name); default: a shard folder's labels.csv")
    p.add_argument("--out", help="where eval.json and the plots go (default: MODEL/eval)")
    p.add_argument("--clips", type=int_at_least(1), default=4, help="temporal clips per video (default 4, as MBT)")
    p.add_argument("--crops", type=int, default=3, choices=(1, 3), help="spatial crops per clip")
    p.add_argument("--task", choices=("multilabel", "single", "multihead"), help="default: from the labels")
    p.add_argument("--batch-size", type=int_at_least(1), default=4)
    p.add_argument("--workers", type=int_at_least(0), default=0)
    p.add_argument("--device", type=device_arg, default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out files that cannot be used (listed in eval.json) instead of stopping")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    args = p.parse_args(argv)

    import torch

    from avfusion.eval.evaluate import evaluate_source, write_plots
    from avfusion.models.pretrained import load_pretrained

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_pretrained(args.model, map_location=device)
    report = evaluate_source(model, args.data, args.labels, args.task, args.batch_size, args.workers,
                             args.clips, args.crops, skip_bad=args.skip_bad)
    out = Path(args.out) if args.out else Path(args.model) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    plots = write_plots(report, out)
    if args.json:
        print(json.dumps(report, allow_nan=False))
    else:
        rows = table_rows(report)
        print_table(rows, list(rows[0]) if rows else ["condition"])
        for line in inputs_summary(report.get("inputs", {})):
            print(line)
        print(f"\nreport: {out / 'eval.json'}" + "".join(f"\nplot: {q}" for q in plots))
    return 0
