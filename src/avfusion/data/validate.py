"""Check every manifest row before training: file, streams, timeline, decoding, labels, ids.

One function, :func:`check_row`, decides whether a row is usable; ``avfusion validate`` reports
what it finds and ``avfusion prepare`` writes exactly the rows it passes (from the same decode),
so the two agree row by row.

Severities:
- ``error``: the row cannot be used: a malformed manifest line, a missing / unreadable file,
  a still image, no stream at all, a truncated or damaged stream (the file ends before its own
  index says, or packets fail to decode), unknown or unencodable labels, a duplicate id, a
  segment outside the file;
- ``warning``: usable with the model's missing-modality path or with padding: a missing audio or
  video stream, a segment shorter than a clip or running past the file, no labels (multi-label),
  frames smaller than 32 pixels;
- ``note``: worth knowing, nothing to fix: streams that start after 0 s, streams of clearly
  unequal length, a display rotation that decoding applies.

Valid real-world shapes are never errors: audio that outlasts the video (or the reverse),
streams that start at 1 s or 5 s, VFR video, edit lists (see data/timeline.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from avfusion.data.clips import ClipConfig
from avfusion.data.decode import Decoded, DecodeError, decode, file_problem, grid_times, open_container, read_timeline
from avfusion.data.manifest import LabelMap, ManifestError, Row, RowProblem
from avfusion.data.timeline import Span, Timeline, judge
from avfusion.errors import InputError

SEVERITIES = ("error", "warning", "note")
TINY_FRAME = 32  # pixels: a smaller short side is upsampled a lot


@dataclass
class Problem:
    id: str
    severity: str  # "error" | "warning" | "note"
    reason: str
    path: str = ""
    line: int = 0  # the row's line in the manifest (0: unknown)


@dataclass
class RowCheck:
    """What :func:`check_row` found: the problems, and on the way the file's timeline, the row's
    segment, the range prepare stores (``data``) and, with ``collect``, its decoded content."""

    problems: list[Problem] = field(default_factory=list)
    timeline: Timeline | None = None
    segment: Span | None = None
    data: Span | None = None
    decoded: Decoded | None = None

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def first_error(self) -> str:
        return next((p.reason for p in self.problems if p.severity == "error"), "")


def data_range(tl: Timeline, seg: Span, cfg: ClipConfig) -> Span:
    """What a row's clips can read: its segment, widened to a centred clip around a segment shorter
    than a clip (clips read the file around it, for context), within the file's usable span."""
    length = max(cfg.video_seconds if tl.has_video else 0.0, cfg.audio_seconds if tl.has_audio else 0.0)
    if seg.duration >= length:
        return seg
    mid = (seg.start + seg.end) / 2
    return Span(max(tl.origin, min(seg.start, mid - length / 2)), max(seg.end, min(tl.end, mid + length / 2)))


def check_row(row: Row, labels: LabelMap | None, cfg: ClipConfig, decode_check: bool = True,
              collect: bool = False) -> RowCheck:
    """Every check of one row. ``decode_check`` decodes the whole range its clips can read (what
    prepare stores); ``collect`` keeps the decoded frames and audio (prepare), otherwise nothing is
    converted or kept (validation of long files stays cheap in memory)."""
    res = RowCheck()

    def add(sev: str, reason: str) -> None:
        res.problems.append(Problem(row.id, sev, reason, row.path, row.line))

    if labels is not None:
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
    problem = file_problem(row.path)
    if problem is not None:
        add("error", problem)
        return res
    try:
        with open_container(row.path) as c:
            tl = res.timeline = read_timeline(c, row.path)
    except DecodeError as e:
        add("error", str(e).replace(f"{row.path}: ", ""))
        return res
    if not tl.has_video and not tl.has_audio:
        add("error", "no audio or video stream")
        return res
    if tl.duration <= 0:
        add("error", "no content (zero duration)")
        return res
    truncated = tl.truncation()
    if truncated:  # found from the index, before any decoding
        add("error", truncated)
        return res
    if not tl.has_video:
        add("warning", "no video stream (audio only)")
    if not tl.has_audio:
        add("warning", "no audio stream (video only)")
    if tl.has_video and 0 < min(tl.width, tl.height) < TINY_FRAME:
        add("warning", f"tiny frames ({tl.width}x{tl.height}): upsampled to the model's size")
    for note in tl.stream_notes():
        add("note", note)
    try:
        seg = res.segment = tl.segment(row.start, row.end)
    except InputError as e:
        add("error", f"{e} (the file has {tl.duration:.3f} s: {tl.describe()})")
        return res
    if seg.end > tl.end + 0.05:
        add("warning", f"segment ends at {seg.end - tl.origin:.3f} s, after the file's {tl.duration:.3f} s: padded")
    length = min(seg.end, tl.end) - seg.start
    need = max(cfg.video_seconds if tl.has_video else 0, cfg.audio_seconds if tl.has_audio else 0)
    if length < need - 1e-3:
        add("warning", f"segment {length:.3f} s is shorter than a clip ({need:.3f} s): padded")
    rng = res.data = data_range(tl, seg, cfg)
    if not decode_check:
        return res
    p = cfg.preprocess
    times = grid_times(rng.start, rng.end, p.fps)
    try:
        d = decode(row.path, times, (rng.start, rng.end), fps=p.fps, sample_rate=p.sample_rate,
                   short_side=p.short_side, timeline=tl, collect=collect)
    except DecodeError as e:
        add("error", f"decoding failed: {str(e).replace(f'{row.path}: ', '')}")
        return res
    verdicts = [judge(tl, kind, read, (rng.start, rng.end), positions=times if kind == "video" else None,
                      rate=p.sample_rate)
                for kind, read in (("video", d.video_read), ("audio", d.audio_read)) if kind in tl.spans]
    for reason in tl.damage(verdicts):
        add("error", reason)
    if d.rotation:
        add("note", f"display rotation: frames are turned {d.rotation} degrees counter-clockwise")
    res.decoded = d
    return res


def manifest_problems(problems: Sequence[RowProblem]) -> list[Problem]:
    """Malformed manifest lines as validation errors."""
    return [Problem(p.id or f"line {p.line}", "error", p.reason, p.path, p.line) for p in problems]


def validate_rows(rows: Sequence[Row], labels: LabelMap, cfg: ClipConfig, decode_check: bool = True,
                  progress: Callable[[Iterable[Row]], Iterable[Row]] | None = None,
                  bad_lines: Sequence[RowProblem] = ()) -> list[Problem]:
    probs = manifest_problems(bad_lines)
    if not rows and not bad_lines:
        return [Problem("-", "error", "empty manifest: no rows")]
    repeats = duplicate_ids(rows)
    for i, row in enumerate(progress(rows) if progress else rows):
        if i in repeats:
            probs.append(Problem(row.id, "error", repeats[i], row.path, row.line))
        probs += check_row(row, labels, cfg, decode_check).problems
    return probs


def duplicate_ids(rows: Sequence[Row]) -> dict[int, str]:
    """Every repeat of an id (its first occurrence is the row): index in ``rows`` -> the reason,
    naming where the first is. The one check behind validate, prepare and eval."""
    first: dict[str, int] = {}
    out: dict[int, str] = {}
    for i, row in enumerate(rows):
        j = first.setdefault(row.id, i)
        if j != i:
            other = rows[j]
            out[i] = f"duplicate id (first on {f'line {other.line}' if other.line else f'row {j + 1}'})"
    return out


def refuse_duplicate_ids(rows: Sequence[Row], source: str) -> None:
    """One line naming the first repeated id and both its lines (and how many more repeat)."""
    repeats = duplicate_ids(rows)
    if repeats:
        i = min(repeats)
        row = rows[i]
        where = f"line {row.line}" if row.line else f"row {i + 1}"
        more = f" (and {len(repeats) - 1} more repeated id(s))" if len(repeats) > 1 else ""
        raise InputError(f"{source}: id {row.id!r} on {where}: {repeats[i]}{more}; `avfusion validate` lists them")


def summary(rows: Sequence[Row], probs: Sequence[Problem], bad_lines: int = 0) -> dict[str, Any]:
    err_rows = {(p.id, p.line) for p in probs if p.severity == "error"}
    return {
        "rows": len(rows) + bad_lines,
        "errors": sum(p.severity == "error" for p in probs),
        "warnings": sum(p.severity == "warning" for p in probs),
        "notes": sum(p.severity == "note" for p in probs),
        "rows_with_errors": len(err_rows),
        "problems": [{"id": p.id, "line": p.line, "severity": p.severity, "reason": p.reason, "path": p.path}
                     for p in probs],
    }


def format_table(probs: Sequence[Problem]) -> str:
    if not probs:
        return "no problems"
    wid = min(40, max(len("id"), *(len(p.id) for p in probs)))
    lines = [f"{'line':>5}  {'id':<{wid}}  {'severity':<8}  reason", f"{'-' * 5}  {'-' * wid}  {'-' * 8}  {'-' * 6}"]
    lines += [f"{p.line or '':>5}  {p.id[:wid]:<{wid}}  {p.severity:<8}  {p.reason}" for p in probs]
    return "\n".join(lines)


__all__ = ["Problem", "RowCheck", "check_row", "data_range", "validate_rows", "duplicate_ids", "refuse_duplicate_ids", "manifest_problems", "summary",
           "format_table"]
