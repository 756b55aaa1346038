"""Check every manifest row before training: file, decoding, streams, duration, labels, ids.

Severities: ``error`` (the row cannot be used: missing / unreadable / truncated file, no stream at
all, unknown or unencodable labels, duplicate id, segment outside the file) and ``warning``
(usable, with the model's missing-modality path or padding: a missing audio or video stream, a
segment shorter than a clip, no labels in multi-label mode). An empty manifest is one error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import av
import numpy as np

from avfusion.data.clips import ClipConfig
from avfusion.data.decode import DecodeError, decode_audio, decode_video, open_container, probe_container
from avfusion.data.manifest import LabelMap, ManifestError, Row


@dataclass
class Problem:
    id: str
    severity: str  # "error" | "warning"
    reason: str
    path: str = ""


def check_row(row: Row, labels: LabelMap, cfg: ClipConfig, decode_check: bool = True) -> list[Problem]:
    probs: list[Problem] = []

    def add(sev: str, reason: str) -> None:
        probs.append(Problem(row.id, sev, reason, row.path))

    bad = labels.unknown(row.labels)
    if bad:
        add("error", f"unknown label(s): {', '.join(bad)}")
    else:
        try:
            labels.encode(row.labels)
            if not row.labels:  # multi-label: an all-zero target, legal but rarely intended
                add("warning", "no labels")
        except ManifestError as e:
            add("error", str(e))
    if not os.path.isfile(row.path):
        add("error", "file not found")
        return probs
    try:
        with open_container(row.path) as c:
            info = probe_container(c, row.path)
    except DecodeError as e:
        add("error", str(e).replace(f"{row.path}: ", ""))
        return probs
    if not info.has_video and not info.has_audio:
        add("error", "no audio or video stream")
        return probs
    if not info.has_video:
        add("warning", "no video stream (audio only)")
    if not info.has_audio:
        add("warning", "no audio stream (video only)")
    start = row.start if row.start is not None else 0.0
    end = row.end if row.end is not None else info.duration
    if info.duration <= 0:
        add("error", "unknown or zero duration")
        return probs
    if start >= info.duration - 1e-3 or end <= start:
        add("error", f"segment [{start:.3f}, {end:.3f}] s outside the file ({info.duration:.3f} s)")
        return probs
    if end > info.duration + 0.05:
        add("warning", f"segment ends at {end:.3f} s after the file ({info.duration:.3f} s): padded")
    length = min(end, info.duration) - start
    need = max(cfg.video_seconds if info.has_video else 0, cfg.audio_seconds if info.has_audio else 0)
    if length < need - 1e-3:
        add("warning", f"segment {length:.3f} s is shorter than a clip ({need:.3f} s): padded")
    if decode_check:
        # Decode the segment's first and last frames and its audio: catches truncation.
        seg_end = min(end, info.duration)
        try:
            if info.has_video:
                with open_container(row.path) as c:
                    times = np.array([start, max(start, seg_end - 1.0 / max(info.fps, 1.0))])
                    _, valid = decode_video(c, times, short_side=None, info=info)
                    if valid < len(times):
                        add("error", f"video ends early (truncated?): no frame decoded near {seg_end:.3f} s")
            if info.has_audio:
                with open_container(row.path) as c:
                    _, (lo, hi) = decode_audio(c, start, seg_end, cfg.preprocess.sample_rate, info)
                    want = int(round((seg_end - start) * cfg.preprocess.sample_rate))
                    if hi - lo < 0.9 * want:
                        add("error", f"audio decodes {(hi - lo) / cfg.preprocess.sample_rate:.3f} s of "
                                     f"{seg_end - start:.3f} s (truncated?)")
        except (DecodeError, av.FFmpegError) as e:
            add("error", f"decoding failed: {e}")
    return probs


def validate_rows(rows: Sequence[Row], labels: LabelMap, cfg: ClipConfig, decode_check: bool = True,
                  progress: Callable[[Iterable[Row]], Iterable[Row]] | None = None) -> list[Problem]:
    probs: list[Problem] = []
    if not rows:
        return [Problem("-", "error", "empty manifest: no rows")]
    seen: dict[str, int] = {}
    for row in progress(rows) if progress else rows:
        if row.id in seen:
            probs.append(Problem(row.id, "error", f"duplicate id (also row {seen[row.id] + 1})", row.path))
        else:
            seen[row.id] = len(seen)
        probs += check_row(row, labels, cfg, decode_check)
    return probs


def summary(rows: Sequence[Row], probs: Sequence[Problem]) -> dict[str, Any]:
    err_ids = {p.id for p in probs if p.severity == "error"}
    return {
        "rows": len(rows),
        "errors": sum(p.severity == "error" for p in probs),
        "warnings": sum(p.severity == "warning" for p in probs),
        "rows_with_errors": len(err_ids),
        "problems": [{"id": p.id, "severity": p.severity, "reason": p.reason, "path": p.path} for p in probs],
    }


def format_table(probs: Sequence[Problem]) -> str:
    if not probs:
        return "no problems"
    wid = min(40, max(len("id"), *(len(p.id) for p in probs)))
    lines = [f"{'id':<{wid}}  {'severity':<8}  reason", f"{'-' * wid}  {'-' * 8}  {'-' * 6}"]
    lines += [f"{p.id[:wid]:<{wid}}  {p.severity:<8}  {p.reason}" for p in probs]
    return "\n".join(lines)


__all__ = ["Problem", "check_row", "validate_rows", "summary", "format_table"]
