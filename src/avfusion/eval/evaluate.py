"""The papers' evaluation protocol on a manifest: multi-view averaging, metrics per output,
and missing-modality conditions.

Every video is cut into ``eval_clips`` uniformly spaced clips x ``eval_crops`` spatial crops
(avfusion.data.clips); the model runs on every view and the per-view logits are averaged per
video (eval/aggregate.py). Metrics are computed for ``logits`` (the scheme's prediction) and for
each output head (audio, video, fusion, global). Conditions: ``audio+video``, and for
audio-visual models ``audio only`` and ``video only``, where the other modality is withheld
from every clip (Zorro then gives its exact unimodal outputs; the others run their present
stream, as documented in docs/models.md).

Files whose real streams lack what a condition needs (a clip without an audio stream under
``audio only``) are skipped for that condition and counted in the report; nothing is filled in.
In distributed runs each rank evaluates a disjoint part (no padding duplicates) and rank 0
gathers the per-video results.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from avfusion.data.clips import ClipConfig
from avfusion.data.datasets import collate, dataset_for, open_source, split_by_presence
from avfusion.data.sources import Source
from avfusion.data.manifest import LabelMap
from avfusion.data.shards import SHARD_META, read_shard_meta
from avfusion.data.validate import duplicate_ids, refuse_duplicate_ids
from avfusion.eval.aggregate import average_views
from avfusion.infer.fast import inference_settings
from avfusion.errors import ConfigError, InputError, SampleError
from avfusion.tasks import task_of
from avfusion.eval.metrics import report_per_output
from avfusion.utils.output import json_safe
from avfusion.utils.distributed import DistInfo, gather_objects, shard_indices



def conditions_for(model_modalities: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    both = {"+".join(model_modalities): model_modalities}
    if len(model_modalities) == 2:
        both.update({"audio only": ("audio",), "video only": ("video",)})
    return both


def headline(kind: str, metrics: dict[str, Any]) -> tuple[str, float | None]:
    """The one number a paper reports for this task kind."""
    if kind == "multilabel":
        return "mAP", metrics.get("mAP")
    if kind == "single":
        return "top1", metrics.get("top1")
    action = metrics.get("action") or {}
    return "action_top1", action.get("top1")


@torch.no_grad()
def _unusable(msg: str, more: int = 0) -> SampleError:
    extra = f" (and {more} more file(s))" if more else ""
    return SampleError(f"{msg}{extra}; `avfusion validate` finds such rows before evaluation, --skip-bad "
                       "evaluates without them and lists them")


def record_inputs(batch: dict[str, Any], inputs: dict[str, Any], stop_at_error: bool) -> None:
    """What decoding found for a batch's files, in ``inputs``: unusable files (listed; with
    ``stop_at_error`` the first one raises at once), damage, notes, the share of each modality
    that is padding."""
    for vid, msg in batch.get("errors", []):
        if stop_at_error:
            raise _unusable(msg)
        inputs["skipped"].append({"id": vid, "error": msg})
    for i, vid in enumerate(batch["id"]):
        for key in ("damage", "notes"):
            found = batch.get(key, [None] * len(batch["id"]))[i]
            if found:
                inputs[key][str(vid)] = list(found)
        for mod in ("video", "audio"):
            padded = batch.get(f"{mod}_padded", [None] * len(batch["id"]))[i]
            total = batch.get(f"{mod}_requested", [None] * len(batch["id"]))[i]
            if padded and total:
                inputs["padded"].setdefault(str(vid), {})[mod] = round(padded / total, 4)


def run_views(model: torch.nn.Module, loader: DataLoader, device: torch.device,
              conditions: dict[str, tuple[str, ...]], skip_bad: bool = False, features: bool = False
              ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Run every view of every sample under each condition: per-condition raw results, and what
    decoding found about the inputs (:func:`record_inputs`). ``features``: also keep
    ``ModelOutput.features`` per output as (ids, views, (n, D)) chunks (retrieval)."""
    res: dict[str, dict[str, Any]] = {c: {"outputs": defaultdict(list), "ids": [], "views": [], "targets": [],
                                          "skipped": 0, "features": defaultdict(list)} for c in conditions}
    found: dict[str, Any] = {"skipped": [], "damage": {}, "notes": {}, "padded": {}}
    splits = model.cfg.class_splits
    for batch in loader:
        record_inputs(batch, found, stop_at_error=not skip_bad)
        if not batch["id"]:
            continue
        for cond, keep in conditions.items():
            r = res[cond]
            for idx, sub in split_by_presence(batch):
                present = tuple(m for m in keep if m in sub)
                if not present:
                    r["skipped"] += len(idx)
                    continue
                V = sub[present[0]].shape[1]  # (b, V, ...) views of each sample
                inputs = {m: sub[m].flatten(0, 1).to(device) for m in present}  # (b * V, ...)
                out = model(inputs)
                named = {"logits": out.logits, **out.outputs}
                for name, scores in named.items():
                    r["outputs"][name].append(scores.float().cpu())
                ids, views = [i for i in sub["id"] for _ in range(V)], list(range(V)) * len(sub["id"])
                r["ids"] += ids
                r["views"] += views
                if features:
                    for name, f in out.features.items():
                        r["features"][name].append((ids, views, f.float().cpu()))
                if "label" not in sub:  # unlabelled data (retrieval only)
                    continue
                target = sub["label"]
                if isinstance(target, dict):
                    target = torch.stack([target[h] for h in splits], dim=1)
                r["targets"].append(target.repeat_interleave(V, dim=0))
    return res, found


def evaluate_dataset(model: torch.nn.Module, dataset: Dataset, task: str | None, batch_size: int = 4,
                     num_workers: int = 0, info: DistInfo = DistInfo(),
                     conditions: dict[str, tuple[str, ...]] | None = None, skip_bad: bool = False,
                     retrieval: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
                     skipped: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Metrics per condition and per output on an evaluation dataset (train=False), and under
    ``inputs`` what decoding found: files skipped (``skip_bad``; ``skipped`` lists rows left out
    before decoding, e.g. repeated ids), damage, notes, padding shares.

    ``retrieval`` (eval/retrieval.py): called with the per-rank raw results of the first
    (all-modalities) condition, features included; its answer is ``report["retrieval"]``.
    ``task=None``: unlabelled data, no classification metrics (retrieval only)."""
    device = next(model.parameters()).device
    model.eval()
    conditions = conditions or conditions_for(model.cfg.modalities)
    # Each sample once across ranks: a map-style dataset is split here without padding; a shard
    # stream splits itself by rank and worker.
    mine = dataset if isinstance(dataset, IterableDataset) else Subset(dataset, shard_indices(len(dataset), info,
                                                                                              pad=False))
    loader = DataLoader(mine, batch_size=batch_size, collate_fn=collate, num_workers=num_workers)
    # Distributed, a rank must not stop alone (the others would wait for it): errors are listed,
    # gathered, and raised on every rank together.
    raw, inputs = run_views(model, loader, device, conditions, skip_bad or info.enabled, features=retrieval is not None)
    gathered = gather_objects((raw, inputs), info)
    merged: dict[str, Any] = {"skipped": list(skipped) if info.is_main else [], "damage": {}, "notes": {},
                              "padded": {}}
    for _, part in gathered:  # type: ignore[misc]
        merged["skipped"] += part["skipped"]
        for key in ("damage", "notes", "padded"):
            merged[key].update(part[key])
    if merged["skipped"] and not skip_bad:
        raise _unusable(merged["skipped"][0]["error"], len(merged["skipped"]) - 1)
    if not info.is_main:
        return {}
    gathered = [g for g, _ in gathered]  # type: ignore[misc]
    report: dict[str, Any] = {"model": model.cfg.name, "task": task, "inference": inference_settings(model),
                              "conditions": {}, "summary": {}, "inputs": merged}
    for cond in conditions:
        parts = [g[cond] for g in gathered]  # type: ignore[index]
        skipped = sum(p["skipped"] for p in parts)
        ids = [i for p in parts for i in p["ids"]]
        if not ids or task is None:
            report["conditions"][cond] = {"num_videos": len(set(ids)), "skipped": skipped}
            continue
        views = [v for p in parts for v in p["views"]]
        targets = torch.cat([t for p in parts for t in p["targets"]])
        per_output = {}
        names = [n for n in parts[0]["outputs"] if all(n in p["outputs"] for p in parts if p["ids"])]
        avg_targets = None
        for name in names:
            scores = torch.cat([s for p in parts if p["ids"] for s in p["outputs"][name]])
            vp = average_views(scores, ids, views, targets=targets)
            per_output[name] = vp.scores
            avg_targets, n_videos = vp.targets, len(vp.ids)
        metrics = report_per_output(task, per_output, avg_targets, model.cfg.class_splits)
        report["conditions"][cond] = {"num_videos": n_videos, "skipped": skipped, "outputs": metrics}
        if task == "single":  # per-video predictions, for the confusion matrix and error analysis
            report["conditions"][cond]["predictions"] = {
                "ids": [str(i) for i in vp.ids], "labels": avg_targets.long().tolist(),
                "preds": per_output["logits"].argmax(1).tolist()}
        key, value = headline(task, metrics["logits"])
        report["summary"][cond] = {key: value}
    if retrieval is not None:
        report["retrieval"] = retrieval([g[next(iter(conditions))] for g in gathered])  # type: ignore[index]
    return json_safe(report)


def evaluate_source(model: torch.nn.Module, source: str | Path | Source, labels: str | Path | None = None,
                    task: str | None = None, batch_size: int = 4, num_workers: int = 0, eval_clips: int = 4,
                    eval_crops: int = 3, info: DistInfo = DistInfo(),
                    conditions: dict[str, tuple[str, ...]] | None = None, skip_bad: bool = False,
                    retrieval: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
                    allow_partial: bool = False) -> dict[str, Any]:
    """Evaluate ``model`` on a source (a manifest's files, or shards: avfusion.data.sources) with the
    papers' multi-view protocol. ``labels`` defaults to a shard folder's labels.csv.

    A file that cannot be used stops the evaluation with one line naming it, or with
    ``skip_bad`` is left out and listed in ``report["inputs"]["skipped"]``; a damaged file
    (truncated, packets that fail to decode) is evaluated on what decodes and listed with its
    damage. With ``retrieval`` (eval/retrieval.py) the report has a ``retrieval`` section; without a
    label map it has only that (the all-modalities condition, no classification metrics)."""
    src, labels_path, rows = open_source(source if isinstance(source, Source) else str(source),
                                         None if labels is None else str(labels), allow_partial)
    clips = ClipConfig.from_model(model.cfg, eval_clips=eval_clips, eval_crops=eval_crops)
    repeated: list[dict[str, Any]] = []
    if rows is not None:
        # A repeated id would fold two rows into one video: refused as validate refuses it, or with
        # skip_bad the repeats are left out (the first row is evaluated) and listed.
        if not skip_bad:
            refuse_duplicate_ids(rows, src.spec)
        repeats = duplicate_ids(rows)
        for i, why in sorted(repeats.items()):
            where = f" (line {rows[i].line})" if rows[i].line else ""
            repeated.append({"id": rows[i].id, "error": f"row {rows[i].id!r}{where}: {why}"})
        rows = [r for i, r in enumerate(rows) if i not in repeats]
    if labels_path is None and retrieval is not None:
        conditions = conditions or dict(list(conditions_for(model.cfg.modalities).items())[:1])
        dataset = dataset_for(src, rows, None, clips, train=False, on_error="mark", damaged="report",
                              missing="mark")
        report = evaluate_dataset(model, dataset, None, batch_size, num_workers, info, conditions, skip_bad, retrieval,
                                  skipped=repeated)
        if report:
            report.update(source=src.spec, eval_clips=eval_clips, eval_crops=eval_crops, class_names=None)
        return report
    if labels_path is None:
        raise ConfigError(f"{src.spec}: evaluation needs a label map (--labels)")
    if task is None:
        meta = read_shard_meta(src.shards[0]) if rows is None and not LabelMap.read(labels_path).heads else {}
        if meta is None or (rows is None and not meta.get("task")):
            raise ConfigError(f"{src.spec}: streamed shards written without a {SHARD_META} member (by an older "
                              "avfusion prepare) do not tell single- from multi-label: pass the task "
                              "(--task single | multilabel)")
        task = meta["task"] if rows is None and meta else infer_task(labels_path, rows or [])
    label_map = LabelMap.read(labels_path, task)
    if label_map.num_classes != model.cfg.num_classes:
        raise InputError(f"the label map has {label_map.num_classes} classes but the model predicts "
                         f"{model.cfg.num_classes}")
    dataset = dataset_for(src, rows, label_map, clips, train=False, on_error="mark", damaged="report",
                          missing="mark")
    report = evaluate_dataset(model, dataset, task, batch_size, num_workers, info, conditions, skip_bad, retrieval,
                              skipped=repeated)
    if report:
        report.update(source=src.spec, eval_clips=eval_clips, eval_crops=eval_crops, class_names=label_map.names)
    return report


def infer_task(labels: str | Path, rows: list) -> str:
    return task_of(bool(LabelMap.read(labels).heads), (len(r.labels) for r in rows))


def write_plots(report: dict[str, Any], out: Path) -> list[Path]:
    """Per-class AP (multi-label) or confusion-matrix (single-label) pictures of the main condition."""
    from avfusion.eval.plots import plot_confusion_matrix, plot_per_class_ap

    if not report.get("task"):  # unlabelled (retrieval only): no classification to draw
        return []
    cond = next(iter(report["conditions"].values()))
    logits = cond.get("outputs", {}).get("logits", {})
    names = report.get("class_names")
    written = []
    if report["task"] == "multilabel" and "per_class_ap" in logits:
        ap = [float("nan") if v is None else v for v in logits["per_class_ap"]]
        written.append(plot_per_class_ap(ap, names, out / "per_class_ap.png"))
    if report["task"] == "single" and "predictions" in cond:
        p = cond["predictions"]
        written.append(plot_confusion_matrix(p["labels"], p["preds"], names, out / "confusion_matrix.png",
                                             num_classes=len(names) if names else None))
    return written

