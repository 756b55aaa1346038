"""`avfusion eval --model DIR --data MANIFEST|SHARDS [--labels LABELS] [--retrieval] [--json]`.

The papers' protocol: K uniformly spaced clips x 3 crops per video, logits averaged per video;
metrics for `logits` and for every output head (audio, video, fusion, global); and, for
audio-visual models, the same with only audio and only video given. Writes eval.json and plots
(per-class AP for multi-label sets, a confusion matrix for single-label sets) to --out.

A file that cannot be used (missing, unreadable, no decodable stream) stops the evaluation with
one line naming it; --skip-bad leaves such files out and lists them. Damaged files (truncated,
packets that fail to decode) are evaluated on what decodes; eval.json's "inputs" lists them, with
each file's damage, notes and padding share.

--retrieval adds cross-modal retrieval (eval.json "retrieval"): every video's audio embedding
queries all videos' video embeddings and the other way round; Recall@1/5/10 and the median rank,
beside chance. Embeddings are the audio and video features through the contrastive projectors a
pretraining run kept beside the model (projectors.safetensors), or the raw features when there
are none (the report says so). Without a label map, --retrieval evaluates retrieval only.

--precision fp32 | bf16 | int8 and --compile: faster CPU inference (docs/evaluation.md "Fast CPU
inference"); eval.json's "inference" records which ran.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from avfusion.cli._common import parse_args, print_table
from avfusion.cli.predict import MODEL_HELP, add_inference_args, load_for_inference
from avfusion.errors import ConfigError
from avfusion.utils.cli_args import ALLOW_PARTIAL_HELP, device_arg, int_at_least
from avfusion.utils.device import resolve_device


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


def retrieval_rows(section: dict) -> list[dict]:
    """One row per direction, with chance beside it."""
    if "error" in section:
        return []
    keys = [k for k in section["chance"] if k != "mean_rank"]
    rows = [{"retrieval": d, "videos": section["num_videos"], **{k: section[d][k] for k in keys}}
            for d in ("audio->video", "video->audio")]
    rows.append({"retrieval": "chance", "videos": section["num_videos"], **{k: section["chance"][k] for k in keys}})
    return [{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


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
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--data", required=True,
                   help="a manifest (CSV / JSONL) or shards: a folder from `avfusion prepare`, a .tar, a brace "
                        "pattern, URLs joined with ::, or a pipe:/http URL")
    p.add_argument("--labels", help="label map (index,mid,display_name); default: a shard folder's labels.csv; "
                                    "not needed for --retrieval alone")
    p.add_argument("--out", help="where eval.json and the plots go (default: MODEL/eval for a model directory, "
                                 "runs/NAME/eval for a released or hf-hub: model)")
    p.add_argument("--clips", type=int_at_least(1), default=4, help="temporal clips per video (default 4, as MBT)")
    p.add_argument("--crops", type=int, default=3, choices=(1, 3), help="spatial crops per clip")
    p.add_argument("--task", choices=("multilabel", "single", "multihead"), help="default: from the labels")
    p.add_argument("--batch-size", type=int_at_least(1), default=4)
    p.add_argument("--workers", type=int_at_least(0), default=0)
    p.add_argument("--device", type=device_arg, default="auto",
                   help="auto (default: the GPU when there is one) | cpu | cuda | cuda:N")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out files that cannot be used (listed in eval.json) instead of stopping")
    p.add_argument("--allow-partial", action="store_true", help=ALLOW_PARTIAL_HELP)
    p.add_argument("--retrieval", action="store_true",
                   help="audio->video and video->audio retrieval (Recall@1/5/10, median rank) on the embeddings")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    add_inference_args(p)
    args = parse_args(p, argv)

    from avfusion.eval.evaluate import evaluate_source, write_plots
    from avfusion.zoo import resolve_model

    local = Path(args.model).is_dir()
    model_dir = resolve_model(args.model)
    model = load_for_inference(model_dir, resolve_device(args.device), args)
    retrieval = None
    if args.retrieval:
        from avfusion.eval.retrieval import PROJECTORS_WEIGHTS, Retrieval, load_projectors

        if len(model.cfg.modalities) != 2:
            raise ConfigError(f"--retrieval ranks one modality against the other, but {model.cfg.name} takes only "
                              f"{model.cfg.modalities[0]}")
        retrieval = Retrieval(load_projectors(model_dir, model.num_features), str(model_dir / PROJECTORS_WEIGHTS))
    report = evaluate_source(model, args.data, args.labels, args.task, args.batch_size, args.workers,
                             args.clips, args.crops, skip_bad=args.skip_bad, retrieval=retrieval,
                             allow_partial=args.allow_partial)
    # a cached release is not written into: its results go beside the other runs
    name = args.model.removeprefix("hf-hub:").replace("/", "_")
    out = Path(args.out) if args.out else (model_dir / "eval" if local else Path("runs") / name / "eval")
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    plots = write_plots(report, out)
    if args.json:
        print(json.dumps(report, allow_nan=False))
    else:
        rows = table_rows(report)
        if rows or "retrieval" not in report:
            print_table(rows, list(rows[0]) if rows else ["condition"])
        if "retrieval" in report:
            section = report["retrieval"]
            rows = retrieval_rows(section)
            if rows:
                print_table(rows, list(rows[0]))
            else:
                print(f"retrieval: {section['error']}")
            print(f"retrieval on {section.get('space')}: {section.get('note')}")
        for line in inputs_summary(report.get("inputs", {})):
            print(line)
        speed = report.get("inference") or {}
        if speed and speed != {"precision": "fp32", "compile": "off"}:
            print(f"precision {speed['precision']}, compile {speed['compile']}")
        print(f"\nreport: {out / 'eval.json'}" + "".join(f"\nplot: {q}" for q in plots))
    return 0
