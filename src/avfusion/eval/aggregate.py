"""Multi-view testing: average the predictions of every view (clip x crop) of a video.

The papers test on K temporal clips x 3 spatial crops per video and report metrics on the
per-video average. Views arrive in any order (a sharded loader, a distributed gather), and a
distributed sampler pads its last batch by repeating views; those repeats carry the same
(``clip_id``, ``view_index``) and are dropped, so every view counts once.

What is averaged: by default the raw output scores (logits), as scenic's MBT ``test_step``
does (its ``softmax_logits`` option is off). ``mode="softmax"`` (per head for multi-head
tasks) or ``mode="sigmoid"`` averages probabilities instead; the result is then probabilities,
so pass ``score_type="probs"`` to the metrics.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from avfusion.errors import ConfigError

AVERAGE_MODES = ("logits", "softmax", "sigmoid")


@dataclass
class VideoPredictions:
    """Per-video results of ``average_views``.

    scores:    (N_videos, C) float64, the mean over each video's distinct views.
    ids:       the N_videos clip ids, sorted, aligned with the rows.
    num_views: (N_videos,) how many distinct views went into each row.
    targets:   (N_videos, ...) each video's target, if targets were given.
    """

    scores: torch.Tensor
    ids: list[Hashable]
    num_views: torch.Tensor
    targets: torch.Tensor | None = None


def _to_tensor(x: torch.Tensor | np.ndarray | Sequence, name: str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim == 0:
        raise ValueError(f"{name} must have a leading view dimension")
    return t.detach().cpu()


def _sorted_ids(ids: list[Hashable]) -> list[Hashable]:
    try:
        return sorted(ids)
    except TypeError:  # mixed id types: still a fixed order, independent of view order
        return sorted(ids, key=repr)


def _activate(scores: torch.Tensor, mode: str, class_splits: Mapping[str, int] | None) -> torch.Tensor:
    if mode == "logits":
        return scores
    if mode == "sigmoid":
        return scores.sigmoid()
    if mode == "softmax":
        sizes = list(class_splits.values()) if class_splits else [scores.shape[1]]
        if sum(sizes) != scores.shape[1]:
            raise ValueError(f"class_splits {dict(class_splits or {})} do not add up to C={scores.shape[1]}")
        return torch.cat([part.softmax(dim=1) for part in scores.split(sizes, dim=1)], dim=1)
    raise ConfigError(f"mode must be one of {AVERAGE_MODES}, got {mode!r}")


def average_views(scores: torch.Tensor | np.ndarray, clip_ids: Sequence[Hashable],
                  view_index: Sequence[int] | torch.Tensor | np.ndarray | None = None, *,
                  targets: torch.Tensor | np.ndarray | None = None, mode: str = "logits",
                  class_splits: Mapping[str, int] | None = None,
                  num_views: int | None = None) -> VideoPredictions:
    """Average per-view predictions into per-video predictions.

    scores:     (V, C) one row per view.
    clip_ids:   V ids naming the video each view comes from.
    view_index: V ints naming the view within its video (e.g. clip * 3 + crop). A repeated
                (clip_id, view_index) pair is a padding duplicate: only its first row counts.
                Without it every row counts, so duplicates cannot be detected.
    targets:    optional (V, ...) per-view targets; all views of a video must agree.
    mode:       "logits" (default: average raw scores), "softmax" (per ``class_splits`` head)
                or "sigmoid" (average probabilities).
    num_views:  if given, every video must have exactly this many distinct views (catches views
                lost on the way, which would silently weaken the average).

    Returns a ``VideoPredictions`` whose rows follow the sorted clip ids, so the result does not
    depend on the order the views arrived in.
    """
    s = _to_tensor(scores, "scores").to(torch.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be (V, C), got {tuple(s.shape)}")
    v = s.shape[0]
    ids = list(clip_ids)
    if len(ids) != v:
        raise ValueError(f"{len(ids)} clip ids for {v} views")

    # Keep the first row of each (clip, view) pair.
    if view_index is not None:
        vi = _to_tensor(view_index, "view_index").long().tolist()
        if len(vi) != v:
            raise ValueError(f"{len(vi)} view indices for {v} views")
        seen: set[tuple[Hashable, int]] = set()
        keep = []
        for row, key in enumerate(zip(ids, vi, strict=True)):
            if key not in seen:
                seen.add(key)
                keep.append(row)
        keep_t = torch.tensor(keep, dtype=torch.long)
        s, ids = s[keep_t], [ids[r] for r in keep]
        if targets is not None:
            targets = _to_tensor(targets, "targets")[keep_t]

    videos = _sorted_ids(list(dict.fromkeys(ids)))
    row_of = {vid: i for i, vid in enumerate(videos)}
    video_of_view = torch.tensor([row_of[i] for i in ids], dtype=torch.long)  # (V',)

    counts = torch.bincount(video_of_view, minlength=len(videos))  # (N_videos,)
    if num_views is not None and (counts != num_views).any():
        bad = int((counts != num_views).nonzero()[0])
        raise ValueError(f"video {videos[bad]!r} has {int(counts[bad])} distinct views, expected {num_views}")
    sums = torch.zeros(len(videos), s.shape[1], dtype=torch.float64)
    sums.index_add_(0, video_of_view, _activate(s, mode, class_splits))
    mean = sums / counts[:, None]

    video_targets = None
    if targets is not None:
        t = _to_tensor(targets, "targets")
        if t.shape[0] != video_of_view.shape[0]:
            raise ValueError(f"{t.shape[0]} targets for {video_of_view.shape[0]} views")
        # Take each video's target from one of its views (the last), then check the others agree.
        last_view = torch.full((len(videos),), -1, dtype=torch.long)
        last_view.scatter_reduce_(0, video_of_view, torch.arange(len(video_of_view)), reduce="amax")
        video_targets = t[last_view]
        same = (t == video_targets[video_of_view]).reshape(len(t), -1).all(dim=1)
        if not same.all():
            bad = videos[int(video_of_view[(~same).nonzero()[0]])]
            raise ValueError(f"the views of video {bad!r} carry different targets")
    return VideoPredictions(scores=mean, ids=videos, num_views=counts, targets=video_targets)
