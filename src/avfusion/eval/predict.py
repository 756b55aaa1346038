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


@torch.no_grad()
def predict_file(model: torch.nn.Module, path: str | Path, top_k: int = 5, clips: int = 4) -> dict[str, Any]:
    cfg = model.cfg
    clip_cfg = ClipConfig.from_model(cfg, eval_clips=clips, eval_crops=1)
    seg = FileSegment(str(path), None, None, clip_cfg)
    sample = ClipProcessor(clip_cfg, train=False)(seg)
    device = next(model.parameters()).device
    inputs = {m: sample[m].to(device) for m in MODALITIES if sample.get(f"has_{m}") and m in cfg.modalities}
    result: dict[str, Any] = {"path": str(path), "has_audio": bool(sample["has_audio"]),
                              "has_video": bool(sample["has_video"]), "clips": clips}
    if not inputs:
        have = [m for m in MODALITIES if sample.get(f"has_{m}")]
        raise ValueError(f"{path}: the file has {have or 'no audio or video'} stream(s); "
                         f"the model needs one of {list(cfg.modalities)}")
    model.eval()
    out = model(inputs)  # (clips, C) per output
    names = cfg.class_names or [str(i) for i in range(cfg.num_classes)]
    scored = {"logits": out.logits, **out.outputs}
    result["outputs"] = {name: top_labels(probabilities(v.float().mean(0), cfg.task, cfg.class_splits), names,
                                          cfg.class_splits, top_k) for name, v in scored.items()}
    notes = list(dict.fromkeys(out.notes))
    for m in MODALITIES:
        if m in cfg.modalities and not sample.get(f"has_{m}"):
            notes.insert(0, f"{Path(path).name} has no {m} stream: unimodal prediction from "
                            f"{'video' if m == 'audio' else 'audio'} only")
    result["notes"] = notes
    return result
