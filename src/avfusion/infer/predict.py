"""Prediction on video files: top labels with scores, per output.

Each file is cut into ``clips`` uniformly spaced clips (centre crop), the model runs on every
clip with the streams the file really has, and the logits are averaged. Scores are
probabilities: sigmoid for multi-label models, softmax (per head) otherwise. A file without an
audio (video) stream runs the model's video-only (audio-only) path, and the result says so.

:func:`answer` turns a sample and its averaged logits into the result (flags, top labels per
output, notes, coverage); :func:`predict_file` and batch prediction over a corpus
(avfusion.infer.corpus, ``avfusion predict --data``) both use it, so a row and the same file
given alone get the same answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from avfusion.data.clips import ClipConfig, ClipProcessor, FileSegment, MediaSegment
from avfusion.errors import InputError
from avfusion.infer.fast import inference_settings
from avfusion.utils.output import json_safe
from avfusion.core.config import MODALITIES, ModelConfig


def probabilities(logits: torch.Tensor, task: str, splits: dict[str, int] | None) -> torch.Tensor:
    if task == "multilabel":
        return logits.sigmoid()
    sizes = list(splits.values()) if splits else [logits.shape[-1]]
    return torch.cat([p.softmax(-1) for p in logits.split(sizes, dim=-1)], dim=-1)


def top_labels(probs: torch.Tensor, names: list[str], splits: dict[str, int] | None, k: int) -> list[dict]:
    """(C,) probabilities -> [{"label", "score"(, "head")}], best first (top k per head)."""
    out = []
    offset = 0
    for head, size in (splits or {None: probs.shape[-1]}).items():
        part = probs[offset:offset + size]
        values, idx = part.topk(min(k, size))
        for v, i in zip(values.tolist(), idx.tolist()):
            entry = {"label": names[offset + i], "score": round(v, 4)}
            if head is not None:
                entry["head"] = head
            out.append(entry)
        offset += size
    return out


NOTE_SHARE = 0.01  # padding below 1% of a modality (a stream a few ms shorter) is in the JSON only


def segment_streams(seg: MediaSegment) -> dict[str, Any]:
    """Where the streams of a segment's file lie, as plain data (it crosses loader workers):
    ``{"duration": s, "spans": {modality: [start, end]}}`` in seconds from the file's origin.
    A modality is a key exactly when the file has that stream; a span (or the duration) is None
    when a prepared shard from before spans were stored does not say."""
    if isinstance(seg, FileSegment):
        tl = seg.timeline
        return {"duration": tl.duration,
                "spans": {m: [s.start - tl.origin, s.end - tl.origin] for m, s in tl.spans.items()}}
    meta: dict[str, Any] = getattr(seg, "meta", {})  # a prepared sample (data/shards.py ShardSegment)
    origin = meta.get("origin")
    spans: dict[str, list[float] | None] = {}
    for m in MODALITIES:
        span = meta.get(f"{m}_span")
        if span is not None and origin is not None:
            spans[m] = [span[0] - origin, span[1] - origin]
        elif span is not None or meta.get(f"has_{m}"):
            spans[m] = None
    known = [s[1] for s in spans.values() if s is not None]
    return {"duration": max(known) if known and len(known) == len(spans) else None, "spans": spans}


def coverage(sample: dict[str, Any], streams: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """How much of what the clips read is real data, per modality, for the JSON and as notes.

    ``streams`` is :func:`segment_streams` of the segment the sample was cut from."""
    duration = streams["duration"]
    cov: dict[str, Any] = {"duration": None if duration is None else round(duration, 3),
                           "damage": list(sample["damage"])}
    notes: list[str] = []
    for mod, unit in (("video", "frames"), ("audio", "samples")):
        if mod not in streams["spans"]:
            continue
        span = streams["spans"][mod]
        total = sample.get(f"{mod}_requested", 0)
        lost = sample.get(f"{mod}_lost", 0)
        padded = sample.get(f"{mod}_padded", 0) - lost
        cov[mod] = {"span": None if span is None else [round(span[0], 3), round(span[1], 3)],
                    "decoded": bool(sample.get(f"has_{mod}")), unit: total, f"padded_{unit}": padded,
                    f"lost_{unit}": lost}
        if total and lost:
            notes.append(f"{mod}: {lost / total:.0%} of what the clips read is lost to the damage")
        if total and padded >= NOTE_SHARE * total:
            where = "" if span is None or duration is None else (
                f" (the {mod} covers {span[0]:.2f}-{span[1]:.2f} s of the file's {duration:.2f} s)")
            notes.append(f"{mod}: {padded / total:.0%} of what the clips read is padding{where}")
    return cov, notes


def usable_modalities(cfg: ModelConfig, sample: dict[str, Any], name: str) -> tuple[str, ...]:
    """The sample's decoded modalities that the model takes; none is an InputError naming ``name``."""
    present = tuple(m for m in MODALITIES if sample.get(f"has_{m}") and m in cfg.modalities)
    if not present:
        have = [m for m in MODALITIES if sample.get(f"has_{m}")]
        why = f" ({'; '.join(sample['damage'])})" if sample["damage"] else ""
        raise InputError(f"{name}: no decodable {' or '.join(cfg.modalities)} for this model"
                         f"{' (the file has only ' + ', '.join(have) + ')' if have else ''}{why}")
    return present


def missing_stream_notes(cfg: ModelConfig, sample: dict[str, Any], streams: dict[str, Any], name: str) -> list[str]:
    """A modality the model takes that the sample lacks: the file has no such stream, or none of it
    decoded; the prediction is then the other modality's."""
    notes = []
    for m in cfg.modalities:
        if not sample.get(f"has_{m}"):
            why = "has no" if m not in streams["spans"] else "could not decode its"
            notes.append(f"{name} {why} {m} stream: unimodal prediction from {'video' if m == 'audio' else 'audio'} "
                         "only")
    return notes


def answer(cfg: ModelConfig, sample: dict[str, Any], streams: dict[str, Any], scores: dict[str, torch.Tensor],
           model_notes: list[str], name: str, top_k: int) -> dict[str, Any]:
    """One file's (or manifest row's) prediction, shared by :func:`predict_file` and batch
    prediction (infer/corpus.py): presence flags, coverage, top labels per output and notes.

    ``scores``: output name -> (C,) logits averaged over the clips ("logits" first);
    ``model_notes``: ``ModelOutput.notes`` of the forward pass; ``name`` names the file in notes."""
    cov, cov_notes = coverage(sample, streams)
    names = cfg.class_names or [str(i) for i in range(cfg.num_classes)]
    outputs = {out: top_labels(probabilities(v.float(), cfg.task, cfg.class_splits), names, cfg.class_splits, top_k)
               for out, v in scores.items()}
    notes = [f"damaged: {d}" if not d.startswith(("damaged", "truncated")) else d for d in sample["damage"]]
    notes += list(sample["notes"]) + cov_notes + list(dict.fromkeys(model_notes))
    notes = missing_stream_notes(cfg, sample, streams, name) + notes
    return {"has_audio": bool(sample["has_audio"]), "has_video": bool(sample["has_video"]), "coverage": cov,
            "outputs": outputs, "notes": notes}


@torch.no_grad()
def predict_file(model: torch.nn.Module, path: str | Path, top_k: int = 5, clips: int = 4) -> dict[str, Any]:
    """Top labels per output for one file (``inference``: the precision it ran at, infer/fast.py).
    A damaged file (truncated, packets that fail to
    decode) is answered from what decodes, with notes saying what was lost; a file with nothing
    decodable (or only a modality the model does not take) raises InputError."""
    cfg = model.cfg
    clip_cfg = ClipConfig.from_model(cfg, eval_clips=clips, eval_crops=1)
    seg = FileSegment(str(path), None, None, clip_cfg)
    sample = ClipProcessor(clip_cfg, train=False)(seg)
    device = next(model.parameters()).device
    present = usable_modalities(cfg, sample, str(path))
    model.eval()
    out = model({m: sample[m].to(device) for m in present})  # (clips, C) per output
    scores = {name: v.float().mean(0) for name, v in {"logits": out.logits, **out.outputs}.items()}  # (C,)
    res = answer(cfg, sample, segment_streams(seg), scores, out.notes, Path(path).name, top_k)
    return json_safe({"path": str(path), "has_audio": res["has_audio"], "has_video": res["has_video"],
                      "clips": clips, "coverage": res["coverage"], "outputs": res["outputs"], "notes": res["notes"],
                      "inference": inference_settings(model)})
