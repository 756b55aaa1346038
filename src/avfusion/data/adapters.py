"""Adapters: public annotation files -> manifest rows + label map (the generic form).

Each adapter takes the dataset's own annotation file(s) and a ``path_template`` saying where
your downloaded media live (``str.format`` fields listed per adapter; relative templates are
joined to ``root``). Rows whose file is missing are kept and reported by :func:`report_missing`
(or by ``avfusion validate``), never silently dropped.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Iterable, Sequence

from avfusion.data.manifest import LabelEntry, LabelMap, ManifestError, Row, split_missing

# Kinetics-Sounds: the Kinetics classes with audible action, as listed by Arandjelovic &
# Zisserman, "Look, Listen and Learn" (ICCV 2017). Pass ``classes=`` to use another list
# (some papers use a 31- or 32-class subset).
KINETICS_SOUNDS = (
    "blowing nose", "bowling", "chopping wood", "ripping paper", "shuffling cards", "singing",
    "tapping pen", "typing", "blowing out", "dribbling ball", "laughing",
    "mowing the lawn by pushing lawnmower", "shoveling snow", "stomping", "tap dancing",
    "tapping guitar", "tickling", "fingerpicking", "patting", "playing accordion",
    "playing bagpipes", "playing bass guitar", "playing clarinet", "playing drums",
    "playing guitar", "playing harmonica", "playing keyboard", "playing organ", "playing piano",
    "playing saxophone", "playing trombone", "playing trumpet", "playing violin",
    "playing xylophone",
)


def _path(root: str | os.PathLike, template: str, **fields: object) -> str:
    p = template.format(**fields)
    return p if os.path.isabs(p) else str(Path(root) / p)


def report_missing(rows: Sequence[Row]) -> tuple[int, list[str]]:
    """(count, ids) of rows whose media file does not exist."""
    _, missing = split_missing(rows)
    return len(missing), [r.id for r in missing]


# -- AudioSet ------------------------------------------------------------------------------


def audioset(segments_csv: str | os.PathLike, labels_csv: str | os.PathLike, root: str | os.PathLike = ".",
             path_template: str = "{ytid}_{start_int}.mp4") -> tuple[list[Row], LabelMap]:
    """AudioSet segment CSV (``balanced_train_segments.csv`` ...) + ``class_labels_indices.csv``.

    Lines starting with ``#`` are comments; each row is ``YTID, start, end, "mid1,mid2"``.
    Template fields: ytid, start, end (floats), start_int, end_int. Labels are mids (multi-label).
    """
    labels = LabelMap.read(labels_csv, mode="multilabel")
    rows: list[Row] = []
    with open(segments_csv, encoding="utf-8") as f:
        lines = [ln for ln in f if ln.strip() and not ln.startswith("#")]
    for rec in csv.reader(io.StringIO("".join(lines)), skipinitialspace=True):
        if len(rec) < 4:
            raise ManifestError(f"{segments_csv}: bad AudioSet row {rec}")
        ytid, start, end, mids = rec[0], float(rec[1]), float(rec[2]), rec[3]
        fields = dict(ytid=ytid, start=start, end=end, start_int=int(start), end_int=int(end))
        path = _path(root, path_template, **fields)
        # downloaded AudioSet files usually hold just the 10 s segment: times are then file-relative
        rows.append(Row(f"{ytid}_{int(start)}", path, None, None, [m.strip() for m in mids.split(",") if m.strip()],
                        {"yt_start": start, "yt_end": end}))
    return rows, labels


# -- VGGSound ------------------------------------------------------------------------------


def vggsound(csv_path: str | os.PathLike, root: str | os.PathLike = ".", split: str | None = None,
             path_template: str = "{ytid}_{start:06d}.mp4") -> tuple[list[Row], LabelMap]:
    """``vggsound.csv``: rows ``ytid,start_seconds,label,split`` (no header), single-label.

    Template fields: ytid, start (int), split. The label map is the sorted class names."""
    recs = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for rec in csv.reader(f):
            if len(rec) < 4 or rec[0] in ("# YouTube ID", "ytid"):
                continue
            recs.append((rec[0], int(float(rec[1])), rec[2].strip(), rec[3].strip()))
    labels = LabelMap.from_names(sorted({r[2] for r in recs}), mode="single")
    rows = [Row(f"{y}_{s:06d}", _path(root, path_template, ytid=y, start=s, split=sp), None, None, [lab],
                {"split": sp}) for y, s, lab, sp in recs if split is None or sp == split]
    return rows, labels


# -- Kinetics-Sounds ---------------------------------------------------------------------------


def kinetics_sounds(csv_path: str | os.PathLike, root: str | os.PathLike = ".",
                    classes: Sequence[str] = KINETICS_SOUNDS,
                    path_template: str = "{label}/{ytid}_{start:06d}_{end:06d}.mp4") -> tuple[list[Row], LabelMap]:
    """A Kinetics CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``) restricted to the
    Kinetics-Sounds classes; single-label. Template fields: label, ytid, start, end (ints), split."""
    labels = LabelMap.from_names(list(classes), mode="single")
    keep = set(classes)
    rows: list[Row] = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for d in csv.DictReader(f):
            lab = d["label"].strip().strip('"')
            if lab not in keep:
                continue
            y, s, e = d["youtube_id"], int(float(d["time_start"])), int(float(d["time_end"]))
            path = _path(root, path_template, label=lab, ytid=y, start=s, end=e, split=d.get("split", ""))
            rows.append(Row(f"{y}_{s:06d}_{e:06d}", path, None, None, [lab], {"split": d.get("split", "")}))
    return rows, labels


# -- EPIC-KITCHENS-100 ---------------------------------------------------------------------------


def _timestamp(s: str) -> float:
    h, m, sec = s.strip().split(":")
    return int(h) * 3600 + int(m) * 60 + float(sec)


def _class_entries(path: str | os.PathLike, head: str) -> list[LabelEntry]:
    with open(path, newline="", encoding="utf-8") as f:
        return [LabelEntry(int(d["id"]), f"{head}:{d['id']}", d["key"], head) for d in csv.DictReader(f)]


def epic_kitchens(annotations_csv: str | os.PathLike, verb_classes_csv: str | os.PathLike,
                  noun_classes_csv: str | os.PathLike, root: str | os.PathLike = ".",
                  path_template: str = "{participant_id}/videos/{video_id}.MP4") -> tuple[list[Row], LabelMap]:
    """EPIC-KITCHENS-100 ``EPIC_100_train.csv`` / ``_validation.csv`` with
    ``EPIC_100_verb_classes.csv`` and ``EPIC_100_noun_classes.csv``: multi-head (verb, noun).

    Each narration is a segment [start_timestamp, stop_timestamp] of the long video; labels are
    ``verb:<key>;noun:<key>``. Template fields: participant_id, video_id."""
    labels = LabelMap(_class_entries(verb_classes_csv, "verb") + _class_entries(noun_classes_csv, "noun"))
    names = {(e.head, e.index): e.display_name for e in labels.entries}
    rows: list[Row] = []
    with open(annotations_csv, newline="", encoding="utf-8") as f:
        for d in csv.DictReader(f):
            v, n = int(d["verb_class"]), int(d["noun_class"])
            path = _path(root, path_template, participant_id=d["participant_id"], video_id=d["video_id"])
            rows.append(Row(d["narration_id"], path, _timestamp(d["start_timestamp"]), _timestamp(d["stop_timestamp"]),
                            [f"verb:{names[('verb', v)]}", f"noun:{names[('noun', n)]}"], {"narration": d.get("narration", "")}))
    return rows, labels


# -- ESC-50 ----------------------------------------------------------------------------------


def esc50(meta_csv: str | os.PathLike, root: str | os.PathLike = ".", folds: Iterable[int] | None = None,
          path_template: str = "audio/{filename}") -> tuple[list[Row], LabelMap]:
    """ESC-50 ``meta/esc50.csv`` (filename,fold,target,category,...): audio-only, single-label.

    The files decode with ``has_video=False`` (audio-only path). ``folds`` selects folds."""
    with open(meta_csv, newline="", encoding="utf-8") as f:
        recs = list(csv.DictReader(f))
    names: dict[int, str] = {int(d["target"]): d["category"] for d in recs}
    labels = LabelMap.from_names([names[i] for i in range(len(names))], mode="single")
    fs = set(folds) if folds is not None else None
    rows = [Row(Path(d["filename"]).stem, _path(root, path_template, filename=d["filename"]), None, None,
                [d["category"]], {"fold": int(d["fold"])}) for d in recs if fs is None or int(d["fold"]) in fs]
    return rows, labels
