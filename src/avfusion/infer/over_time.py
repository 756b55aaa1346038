"""Timelines: the model's answer for every window of a whole media file, and a picture of it.

Windows. A file's usable span (or a manifest row's segment) is covered by windows of ``window``
seconds every ``hop`` seconds (default: the model's clip length, the longer of its video and
audio clip for the streams used, and half of it): starts 0, hop, 2 hop, ..., and the last window
ends at the span's end (so it may overlap its neighbour by more than the others do). A span no
longer than a window is one window. Times count from the file's origin (data/timeline.py: what a
player shows as 0:00; a file whose streams start at 5 s has its first window at 0), as manifests
count them.

Bounds. A window or hop below the model's time step (``time_step``: the audio's mel hop, or a
video-only model's frame step) is refused (ConfigError, naming the minimum), and so is a file that
would take more than ``MAX_WINDOWS`` windows; a window longer than the span is the span (clips
counted from it, a note), a window needing more than ``MAX_CLIPS_PER_WINDOW`` clips gets that many
spread over it (a note), and a hop longer than the window leaves gaps that a note names.

Clips. A window is scored by ``ceil(window / clip)`` model clips spread over it (one for the
default window), centre crop, their logits averaged; a window shorter than a clip is scored by
one clip centred on it, which reads the file around the window (context), as a short manifest
segment is read. Scores are probabilities, as in predict (sigmoid for multi-label models,
softmax per head otherwise).

Decoding. Windows go through in chunks of ``batch_size``: each chunk is one decode of the
frames and audio its clips need (avfusion.data.decode, on the file's one timeline), one batched
forward pass, then freed, so memory stays bounded by one chunk whatever the file's length (an
hour-long video holds a few hundred small result rows, never its frames). Consecutive chunks
re-read the overlap of their neighbouring windows.

Notes. Facts about the file (a stream it lacks, a non-zero start, streams of unequal length, a
rotation, truncation, the model's missing-modality path) are said once, in the file's
``notes``. Each window's ``notes`` say what is true of that window only: how much of what its
clips read is padding (outside a stream's span) or lost to damage (inside it but not decoded:
past a truncation, the audio holes of failed packets), and the damage found there; a
window where a stream the file has gave nothing runs on the other modality and says so.
Packets that fail to decode are noted on the window holding the first failed packet of its chunk.
"""

from __future__ import annotations

import dataclasses
import html
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from avfusion.data.clips import ClipConfig, ClipProcessor, FileSegment, clip_centres, take
from avfusion.data.timeline import StreamRead, judge
from avfusion.data.manifest import Row
from avfusion.data.sources import Source
from avfusion.errors import ConfigError, InputError
from avfusion.infer.corpus import CorpusJob, CorpusSummary, JsonlParts, record_settings, run_corpus
from avfusion.infer.fast import inference_settings
from avfusion.utils.distributed import DistInfo
from avfusion.utils.output import json_safe
from avfusion.infer.predict import coverage, missing_stream_notes, probabilities, segment_streams, top_labels
from avfusion.core.config import MODALITIES, ModelConfig

PLOT_CLASSES = 4  # classes drawn in the picture (the main output's most frequent top labels)
# Bounds that keep a timeline's memory bounded whatever --window / --hop ask for: a file's result
# rows (5-20 kB a window) and one chunk's clips (--batch-size windows x clips per window).
MAX_WINDOWS = 20_000  # a 2.7-hour file at the tiny models' 0.49 s hop; 22 hours of MBT-B at 4 s
MAX_CLIPS_PER_WINDOW = 16  # a longer window is scored by this many clips spread over it


def window_spans(start: float, end: float, window: float, hop: float) -> list[tuple[float, float]]:
    """Windows [s, s + window) every ``hop`` over [start, end], the last one ending at ``end``;
    one window [start, end) when the span is no longer than a window."""
    length = end - start
    if length <= window + 1e-9:
        return [(start, end)]
    n = math.ceil((length - window) / hop - 1e-9) + 1
    starts = [min(start + k * hop, end - window) for k in range(n)]
    return [(s, s + window) for s in starts]


@dataclass
class FileTimeline:
    """One file's timeline: per-window answers (JSON-ready) and the full per-class probabilities
    of every output (for the picture; (N, C) float32 per output, NaN rows where a window lacks
    that output)."""

    file: str
    model: str
    window: float
    hop: float
    clip_seconds: float
    clips_per_window: int
    span: tuple[float, float]  # the windows' span, seconds from the origin
    duration: float  # the file's usable span
    has_audio: bool
    has_video: bool
    class_names: list[str]
    notes: list[str] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)
    probs: dict[str, np.ndarray] = field(default_factory=dict)
    inference: dict[str, str] = field(default_factory=dict)  # precision and compile (infer/fast.py)

    def to_json(self) -> dict[str, Any]:
        r3 = lambda x: round(float(x), 3)  # noqa: E731
        return json_safe({"file": self.file, "model": self.model, "duration": r3(self.duration),
                          "span": [r3(self.span[0]), r3(self.span[1])], "window": r3(self.window),
                          "hop": r3(self.hop), "clip_seconds": r3(self.clip_seconds),
                          "clips_per_window": self.clips_per_window, "has_audio": self.has_audio,
                          "has_video": self.has_video, "inference": self.inference, "notes": self.notes,
                          "timeline": self.windows})


class _Window:
    """One window and the centres of the clips that score it (seconds on the file's timeline)."""

    def __init__(self, start: float, end: float, centres: list[float]) -> None:
        self.start, self.end, self.centres = start, end, centres


def _clip_seconds(cfg: ClipConfig, modalities: Sequence[str]) -> float:
    return max(cfg.video_seconds if "video" in modalities else 0.0, cfg.audio_seconds if "audio" in modalities else 0.0)


def time_step(cfg: ModelConfig) -> tuple[float, str]:
    """The finest time step the model's inputs resolve, and what it is: the audio's mel hop, or
    (a video-only model) the time between the frames it samples. Windows or hops shorter than it
    give the model the same input over and over."""
    p = cfg.preprocess
    if "audio" in cfg.modalities:
        return p.frame_shift_ms / 1000, f"the audio's {p.frame_shift_ms:g} ms mel hop"
    return p.frame_stride / p.fps, f"the video's frame step ({p.frame_stride} frames at {p.fps:g} fps)"


def check_window(cfg: ModelConfig, window: float | None, hop: float | None) -> None:
    """Refuse a --window or --hop below the model's time step (ConfigError naming the minimum)."""
    step, what = time_step(cfg)
    for flag, value in (("--window", window), ("--hop", hop)):
        if value is not None and value < step - 1e-12:
            raise ConfigError(f"{flag} {value:g} s is below the model's time resolution: at least {step:g} s ({what})")


@torch.no_grad()
def timeline_file(model: torch.nn.Module, path: str | os.PathLike, window: float | None = None,
                  hop: float | None = None, top_k: int = 5, batch_size: int = 8, start: float | None = None,
                  end: float | None = None) -> FileTimeline:
    """The timeline of one file (or of its ``start`` .. ``end`` segment, seconds from the origin);
    see the module docstring. A file with nothing the model can use raises InputError; a window
    or hop below the model's time step, or one giving more than MAX_WINDOWS windows, ConfigError."""
    cfg = model.cfg
    check_window(cfg, window, hop)
    clip_cfg = ClipConfig.from_model(cfg, eval_clips=1, eval_crops=1)
    seg = FileSegment(str(path), start, end, clip_cfg)
    tl = seg.timeline
    used = tuple(m for m in cfg.modalities if getattr(seg, f"has_{m}"))
    if not used:
        raise InputError(f"{path}: no {' or '.join(cfg.modalities)} stream for this model "
                         f"(the file has only {', '.join(tl.spans)})")
    clip = _clip_seconds(clip_cfg, used)
    asked = window
    window = window or clip
    hop = hop or window / 2
    length = seg.end - seg.start
    bounds: list[str] = []  # what the requested window and hop became, for the file's notes
    if window > length + 1e-9:  # one window, of the span: clips are counted from it, not from the request
        if asked is not None:
            bounds.append(f"--window {asked:g} s is longer than the {length:.2f} s to cover: one window of "
                          f"{length:.2f} s")
        window = length
    count = 1 if length <= window + 1e-9 else math.ceil((length - window) / hop - 1e-9) + 1
    if count > MAX_WINDOWS:  # refused before any window is made
        raise ConfigError(f"--hop {hop:g} s over {length:.2f} s makes {count} windows (at most {MAX_WINDOWS}): use "
                          f"--hop {math.ceil((length - window) / (MAX_WINDOWS - 1) * 1000) / 1000:g} or more")
    if count > 1 and hop > window + 1e-9:
        bounds.append(f"--hop {hop:g} s is longer than the {window:g} s window: {hop - window:.2f} s after each "
                      "window but the last is not read")
    per_window = max(1, math.ceil(window / clip - 1e-9))
    if per_window > MAX_CLIPS_PER_WINDOW:
        bounds.append(f"each {window:.2f} s window is scored by {MAX_CLIPS_PER_WINDOW} clips of {clip:.2f} s spread "
                      f"over it (not all of it is read)")
        per_window = MAX_CLIPS_PER_WINDOW
    windows = [_Window(s, e, clip_centres(s, e, clip, per_window)) for s, e in window_spans(seg.start, seg.end,
                                                                                             window, hop)]
    name = Path(path).name
    streams = segment_streams(seg)
    names = cfg.class_names or [str(i) for i in range(cfg.num_classes)]
    result = FileTimeline(str(path), cfg.name, window, hop, clip, per_window,
                          (seg.start - tl.origin, seg.end - tl.origin), tl.duration, seg.has_audio, seg.has_video,
                          names, inference=inference_settings(model))
    file_notes = bounds + tl.stream_notes()
    if tl.truncation():
        file_notes.append(tl.truncation())  # type: ignore[arg-type]
    model_notes: list[str] = []
    probs: list[dict[str, np.ndarray]] = []  # per window: output -> (C,) probabilities
    device = next(model.parameters()).device
    model.eval()
    proc = ClipProcessor(clip_cfg, train=False)
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        sample, per = _decode_chunk(seg, clip_cfg, proc, chunk, used)
        if "rotation" in sample:
            file_notes.append(sample.pop("rotation"))
        present = tuple(m for m in used if m in sample)
        if present:
            out = model({m: sample[m].to(device) for m in present})  # (clips, C) per output
            model_notes += out.notes
            named = {"logits": out.logits, **out.outputs}
            scores = {n: v.float().cpu().view(len(chunk), per_window, -1).mean(1) for n, v in named.items()}  # (w, C)
        else:
            scores = {}
        for j, (w, acc) in enumerate(zip(chunk, per)):
            entry = _window_entry(cfg, w, acc, streams, {n: v[j] for n, v in scores.items()}, names, top_k,
                                  tl.origin, used, present)
            result.windows.append(entry)
            probs.append({n: probabilities(v[j], cfg.task, cfg.class_splits).numpy() for n, v in scores.items()})
    missing = {f"has_{m}": getattr(seg, f"has_{m}") for m in MODALITIES}
    result.notes = list(dict.fromkeys(missing_stream_notes(cfg, missing, streams, name) + file_notes + model_notes))
    # (N, C) per output; NaN rows where a window lacks the output (a stream gave nothing there)
    gap = np.full(len(names), np.nan, np.float32)
    outputs = list(dict.fromkeys(n for p in probs for n in p))
    result.probs = {n: np.stack([p.get(n, gap) for p in probs]).astype(np.float32) for n in outputs}
    return result


def _decode_chunk(seg: FileSegment, cfg: ClipConfig, proc: ClipProcessor, chunk: list[_Window],
                  used: tuple[str, ...]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One decode for a chunk of windows: model inputs (every clip of every window, in order)
    and, per window, what its clips read (requested, real, lost positions and damage)."""
    centres = [c for w in chunk for c in w.centres]
    times = np.concatenate([cfg.video_times(c) for c in centres])  # (clips * T,)
    spans = [cfg.audio_span(c) for c in centres]
    union = (min(s[0] for s in spans), max(s[1] for s in spans))
    order = np.argsort(times, kind="stable")
    d = seg.decode(times[order] if "video" in used else None, union if "audio" in used else None)
    tl = seg.timeline
    sample: dict[str, Any] = {}
    per: list[dict[str, Any]] = [{"damage": [], "notes": []} for _ in chunk]
    n_frames, n_samples, sr = cfg.num_frames, cfg.audio_samples, cfg.preprocess.sample_rate
    k = len(chunk[0].centres)
    if "video" in used:
        real = np.zeros(len(times), bool)
        if d.video_real is not None:
            real[order] = d.video_real
        reads = _reads_per_window(d.video_read, chunk)
        for j, acc in enumerate(per):
            pos = slice(j * k * n_frames, (j + 1) * k * n_frames)
            t = times[pos]
            v = judge(tl, "video", reads[j], (float(t.min()), float(t.max())), positions=t)
            _account(acc, "video", len(t), int(real[pos].sum()), v.missing["video"], v.errors, d.video is not None)
        if d.video is not None:
            frames = np.empty_like(d.video)
            frames[order] = d.video  # back to clip order
            clips = torch.from_numpy(frames).view(len(centres), n_frames, *frames.shape[1:])  # (K, T, H, W, 3)
            sample["video"] = proc.video_views(clips)  # (K, 3, T, h, w)
            if d.rotation:
                sample["rotation"] = f"video turned {d.rotation} degrees counter-clockwise, as its display matrix says"
    if "audio" in used:
        offs = [int(round((s[0] - union[0]) * sr)) for s in spans]
        reads = _reads_per_window(d.audio_read, chunk)
        for j, acc in enumerate(per):
            mine = offs[j * k:(j + 1) * k]
            valid = 0 if d.audio_real is None else sum(int(d.audio_real[o:o + n_samples].sum()) for o in mine)
            a0, a1 = spans[j * k][0], spans[(j + 1) * k - 1][1]
            v = judge(tl, "audio", reads[j], (a0, a1), rate=sr)
            lost = v.missing["audio"]
            if d.audio_read.errors and tl.audio is not None:
                # Failed packets anywhere in the chunk leave holes (silence, not real) inside the
                # stream's span: this window's share of them is lost data, not padding.
                inside = sum(int(round(tl.audio.overlap(*spans[i]) * sr)) for i in range(j * k, (j + 1) * k))
                lost = max(lost, inside - valid)
            _account(acc, "audio", k * n_samples, valid, lost, v.errors, d.audio is not None)
        if d.audio is not None:
            wav = np.stack([take(d.audio, o, n_samples) for o in offs])
            sample["audio"] = proc.audio_views(torch.from_numpy(np.ascontiguousarray(wav)))  # (K, T_a, F)
    return sample, per


def _reads_per_window(read: StreamRead, chunk: list[_Window]) -> list[StreamRead]:
    """The chunk's decode report for each window: where decoding stopped applies to all of them;
    failed packets only to the window holding the first of them (the report does not say where
    the others were)."""
    quiet = dataclasses.replace(read, errors=0, error_at=None, error_msg="")
    if not read.errors:
        return [quiet] * len(chunk)
    at = read.error_at if read.error_at is not None else chunk[0].start
    dist = [0.0 if w.start <= at < w.end else min(abs(at - w.start), abs(at - w.end)) for w in chunk]
    owner = int(np.argmin(dist))
    return [read if j == owner else quiet for j in range(len(chunk))]


def _account(acc: dict[str, Any], mod: str, requested: int, valid: int, missing: int, errors: list[str],
             decoded: bool) -> None:
    """A window's share of one modality, in the sample keys infer.predict.coverage reads."""
    acc[f"has_{mod}"] = decoded
    acc[f"{mod}_requested"] = requested
    acc[f"{mod}_padded"] = requested - valid
    acc[f"{mod}_lost"] = min(missing, requested - valid)
    acc["damage"] += errors


def _window_entry(cfg: Any, w: _Window, acc: dict[str, Any], streams: dict[str, Any], scores: dict[str, torch.Tensor],
                  names: list[str], top_k: int, origin: float, used: tuple[str, ...],
                  present: tuple[str, ...]) -> dict[str, Any]:
    """``{"start", "end", "label", "score", "outputs", "notes"}`` of one window."""
    _, cov_notes = coverage({**acc, "has_audio": acc.get("has_audio", False), "has_video": acc.get("has_video", False)},
                            streams)
    notes = [d if d.startswith(("damaged", "truncated")) else f"damaged: {d}" for d in dict.fromkeys(acc["damage"])]
    notes += cov_notes
    for m in used:
        if m not in present:
            notes.insert(0, f"{m}: nothing decodable in this window: "
                            + (f"{' and '.join(present)} only" if present else "no prediction"))
    outputs = {n: top_labels(probabilities(v, cfg.task, cfg.class_splits), names, cfg.class_splits, top_k)
               for n, v in scores.items()}
    label: str | None = None
    score: float | None = None
    if "logits" in outputs:
        main = outputs["logits"]
        if cfg.class_splits:  # one best label per head
            best = {e["head"]: e for e in reversed(main)}
            label = ", ".join(f"{h}: {best[h]['label']}" for h in cfg.class_splits)
        else:
            label, score = main[0]["label"], main[0]["score"]
    entry = {"start": round(w.start - origin, 3), "end": round(w.end - origin, 3), "label": label}
    if score is not None:
        entry["score"] = score
    entry.update(outputs=outputs, notes=notes)
    return entry


# -- text, picture, page --------------------------------------------------------------------------


def describe(result: FileTimeline) -> list[str]:
    """The timeline as text lines: one per window, its best label per output."""
    lines = [f"{result.file}: {len(result.windows)} window(s) of {result.window:.2f} s every {result.hop:.2f} s"]
    lines += [f"  note: {n}" for n in result.notes]
    for w in result.windows:
        heads = "  ".join(f"{n} {o[0]['label']} {o[0]['score']:.2f}" for n, o in w["outputs"].items()
                          if n != "logits" and o and o[0]["score"] is not None)
        main = "-" if w["label"] is None else f"{w['label']}" + (f" {w['score']:.2f}" if "score" in w else "")
        lines.append(f"  {w['start']:8.2f}-{w['end']:8.2f} s  {main:<16} {heads}")
        lines += [f"      note: {n}" for n in w["notes"]]
    return lines


CURVE_STYLE = {"audio": ("tab:red", "-", 1.6), "video": ("tab:blue", "-", 1.6), "fusion": ("black", "--", 1.2),
               "logits": ("black", "--", 1.2), "global": ("tab:gray", ":", 1.2)}  # colour, line, width


def curves(outputs: Sequence[str]) -> list[str]:
    """The outputs drawn: audio, video and fusion (Zorro); per-modality heads plus their mean
    ``logits`` (MBT and the other stream models)."""
    drawn = [o for o in ("audio", "video", "fusion") if o in outputs]
    if "fusion" not in drawn and "logits" in outputs and len(drawn) != 1:
        drawn.append("logits")
    return drawn or [o for o in outputs][:1]


def plot_classes(result: FileTimeline, max_classes: int = PLOT_CLASSES) -> list[int]:
    """The classes to draw: those some drawn output ranks first in some window, by how many
    windows the main output gives them, then by their highest probability (at most
    ``max_classes``)."""
    main = result.probs.get("logits")
    if main is None or not len(main) or np.isnan(main).all():
        return []
    winners: set[int] = set()
    for name in curves(list(result.probs)) + ["logits"]:
        p = result.probs[name]
        ok = ~np.isnan(p).any(1)
        winners.update(np.argmax(p[ok], 1).tolist())
    valid = ~np.isnan(main).any(1)
    wins = np.bincount(np.argmax(main[valid], 1), minlength=main.shape[1])
    peak = np.nanmax(main, 0)
    return sorted(winners, key=lambda c: (-wins[c], -peak[c]))[:max_classes]


def _figure(result: FileTimeline, max_classes: int) -> Any:
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    classes = plot_classes(result, max_classes)
    drawn = curves(list(result.probs))
    t = np.array([(w["start"] + w["end"]) / 2 for w in result.windows])  # window centres
    # each window's stretch of the ribbon: halfway to its neighbours' centres, the span's edges at the ends
    edges = np.concatenate([[result.span[0]], (t[1:] + t[:-1]) / 2, [result.span[1]]])
    fig = Figure(figsize=(10, 1.4 + 0.3 * len(drawn) + 1.5 * max(len(classes), 1)))
    axes = fig.subplots(1 + len(classes), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [0.25 * len(drawn) + 0.3] + [1.0] * len(classes)})[:, 0]
    palette = ["tab:green", "tab:orange", "tab:cyan", "tab:olive", "tab:pink", "tab:brown"]
    colour = {c: palette[i % len(palette)] for i, c in enumerate(classes)}
    # The ribbon: each output's top class per window; rows that differ are where sound and picture disagree.
    ribbon = axes[0]
    for row, name in enumerate(drawn):
        p = result.probs[name]
        for i in range(len(t)):
            if np.isnan(p[i]).any():
                continue
            ribbon.broken_barh([(edges[i], edges[i + 1] - edges[i])], (row - 0.4, 0.8),
                               facecolors=colour.get(int(np.argmax(p[i])), "lightgray"))
    ribbon.set_yticks(range(len(drawn)), drawn, fontsize=8)
    ribbon.set_ylim(len(drawn) - 0.5, -0.5)
    ribbon.set_title(f"{Path(result.file).name}: the top class of each output over time", fontsize=9)
    ribbon.legend(handles=[Patch(color=colour[c], label=result.class_names[c]) for c in classes],
                  loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    for ax, c in zip(axes[1:], classes):
        for name in drawn:
            col, style, width = CURVE_STYLE.get(name, ("tab:gray", "-", 1.2))
            ax.plot(t, result.probs[name][:, c], style, color=col, label=name, linewidth=width)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(result.class_names[c], fontsize=8, color=colour[c], rotation=0, ha="right", va="center")
        ax.grid(alpha=0.3)
    if classes:
        axes[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    axes[-1].set_xlabel("seconds from the file's start")
    axes[-1].set_xlim(result.span[0], max(result.span[1], result.span[0] + 1e-3))
    fig.tight_layout()
    return fig


def plot_timeline(result: FileTimeline, path: str | os.PathLike, max_classes: int = PLOT_CLASSES) -> Path:
    """A PNG (``.png``) or a self-contained HTML page with the picture inline as SVG and the
    windows as a table (``.html`` / ``.htm``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    kind = path.suffix.lower()
    if kind not in (".png", ".html", ".htm"):
        raise ConfigError(f"--plot {path}: give a .png or .html file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = _figure(result, max_classes)
    FigureCanvasAgg(fig)
    if kind == ".png":
        fig.savefig(path, format="png", dpi=100)
        return path
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    svg = svg[svg.find("<svg"):]  # the XML prolog does not belong inside HTML
    path.write_text(_page(result, svg), encoding="utf-8")
    return path


def _page(result: FileTimeline, svg: str) -> str:
    e = html.escape
    rows = []
    for w in result.windows:
        tops = "<br>".join(f"{e(n)}: {e(o[0]['label'])} {o[0]['score']:.2f}" for n, o in w["outputs"].items()
                           if o and o[0]["score"] is not None)
        rows.append(f"<tr><td>{w['start']:.2f}</td><td>{w['end']:.2f}</td><td>{e(str(w['label']))}</td>"
                    f"<td>{tops}</td><td>{'<br>'.join(e(n) for n in w['notes'])}</td></tr>")
    notes = "".join(f"<li>{e(n)}</li>" for n in result.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(Path(result.file).name)}: timeline</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:2px 6px;vertical-align:top}}th{{background:#eee}}</style></head>
<body><h2>{e(result.file)}</h2>
<p>model {e(result.model)}; {len(result.windows)} window(s) of {result.window:.2f} s every {result.hop:.2f} s
over {result.span[0]:.2f}-{result.span[1]:.2f} s</p>
{f"<ul>{notes}</ul>" if notes else ""}
{svg}
<table><tr><th>start (s)</th><th>end (s)</th><th>label</th><th>top per output</th><th>notes</th></tr>
{"".join(rows)}</table></body></html>
"""


# -- a corpus: one JSON line per file ---------------------------------------------------------------


def timeline_corpus(model: torch.nn.Module, source: str | os.PathLike | Source, out: str | os.PathLike,
                    window: float | None = None, hop: float | None = None, top_k: int = 5, batch_size: int = 8,
                    info: DistInfo = DistInfo(), progress: bool = False) -> CorpusSummary:
    """Every manifest row's timeline (its ``start`` / ``end`` segment, or the whole file), one
    JSON line per row in ``out``: ``{"id", "path", ...}`` as :meth:`FileTimeline.to_json`
    without ``file``, or ``{"id", "path", "error"}``. Resumable and torchrun-aware like
    ``predict --data``: the same runner (avfusion.infer.corpus.run_corpus), with the row's
    timeline as its per-row hook."""
    check_window(model.cfg, window, hop)  # once, not as an error on every row

    def row_timeline(row: Row) -> dict[str, Any]:
        tl = timeline_file(model, row.path, window, hop, top_k, batch_size, row.start, row.end)
        return {k: v for k, v in tl.to_json().items() if k != "file"}

    job = CorpusJob({"command": "predict --timeline", "window": window, "hop": hop, "top_k": top_k,
                     **record_settings(model)}, JsonlParts, per_row=row_timeline)
    return run_corpus(model, source, out, job, info, progress)


__all__ = ["FileTimeline", "window_spans", "timeline_file", "timeline_corpus", "plot_timeline", "describe",
           "check_window", "time_step", "MAX_WINDOWS", "MAX_CLIPS_PER_WINDOW",
           "curves", "plot_classes"]
