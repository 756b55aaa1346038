"""Prediction on video files: top labels with scores, per output.

Each file is cut into ``clips`` uniformly spaced clips (centre crop), the model runs on every
clip with the streams the file really has, and the logits are averaged. Scores are
probabilities: sigmoid for multi-label models, softmax (per head) otherwise. A file without an
audio (video) stream runs the model's video-only (audio-only) path, and the result says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from avfusion.data.clips import ClipConfig, ClipProcessor, FileSegment
from avfusion.errors import InputError
from avfusion.eval.metrics import json_safe
from avfusion.models.config import MODALITIES


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


def coverage(sample: dict[str, Any], seg: FileSegment) -> tuple[dict[str, Any], list[str]]:
    """How much of what the clips read is real data, per modality, for the JSON and as notes."""
    tl = seg.timeline
    cov: dict[str, Any] = {"duration": round(tl.duration, 3), "damage": list(sample["damage"])}
    notes: list[str] = []
    for mod, unit in (("video", "frames"), ("audio", "samples")):
        span = tl.spans.get(mod)
        if span is None:
            continue
        total = sample.get(f"{mod}_requested", 0)
        lost = sample.get(f"{mod}_lost", 0)
        padded = sample.get(f"{mod}_padded", 0) - lost
        cov[mod] = {"span": [round(span.start - tl.origin, 3), round(span.end - tl.origin, 3)],
                    "decoded": bool(sample.get(f"has_{mod}")), unit: total, f"padded_{unit}": padded,
                    f"lost_{unit}": lost}
        if total and lost:
            notes.append(f"{mod}: {lost / total:.0%} of what the clips read is lost to the damage")
        if total and padded >= NOTE_SHARE * total:
            notes.append(f"{mod}: {padded / total:.0%} of what the clips read is padding (the {mod} covers "
                         f"{span.start - tl.origin:.2f}-{span.end - tl.origin:.2f} s of the file's {tl.duration:.2f} s)")
    return cov, notes


@torch.no_grad()
def predict_file(model: torch.nn.Module, path: str | Path, top_k: int = 5, clips: int = 4) -> dict[str, Any]:
    """Top labels per output for one file. A damaged file (truncated, packets that fail to
    decode) is answered from what decodes, with notes saying what was lost; a file with nothing
    decodable (or only a modality the model does not take) raises InputError."""
    cfg = model.cfg
    clip_cfg = ClipConfig.from_model(cfg, eval_clips=clips, eval_crops=1)
    seg = FileSegment(str(path), None, None, clip_cfg)
    sample = ClipProcessor(clip_cfg, train=False)(seg)
    device = next(model.parameters()).device
    inputs = {m: sample[m].to(device) for m in MODALITIES if sample.get(f"has_{m}") and m in cfg.modalities}
    cov, cov_notes = coverage(sample, seg)
    result: dict[str, Any] = {"path": str(path), "has_audio": bool(sample["has_audio"]),
                              "has_video": bool(sample["has_video"]), "clips": clips, "coverage": cov}
    if not inputs:
        have = [m for m in MODALITIES if sample.get(f"has_{m}")]
        why = f" ({'; '.join(sample['damage'])})" if sample["damage"] else ""
        raise InputError(f"{path}: no decodable {' or '.join(cfg.modalities)} for this model"
                         f"{' (the file has only ' + ', '.join(have) + ')' if have else ''}{why}")
    model.eval()
    out = model(inputs)  # (clips, C) per output
    names = cfg.class_names or [str(i) for i in range(cfg.num_classes)]
    scored = {"logits": out.logits, **out.outputs}
    result["outputs"] = {name: top_labels(probabilities(v.float().mean(0), cfg.task, cfg.class_splits), names,
                                          cfg.class_splits, top_k) for name, v in scored.items()}
    notes = [f"damaged: {d}" if not d.startswith(("damaged", "truncated")) else d for d in sample["damage"]]
    notes += list(sample["notes"]) + cov_notes + list(dict.fromkeys(out.notes))
    for m in MODALITIES:
        if m in cfg.modalities and not sample.get(f"has_{m}"):
            why = "has no" if m not in seg.timeline.spans else "could not decode its"
            notes.insert(0, f"{Path(path).name} {why} {m} stream: unimodal prediction from "
                            f"{'video' if m == 'audio' else 'audio'} only")
    result["notes"] = notes
    return json_safe(result)
