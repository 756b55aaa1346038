"""Manifests (CSV / JSONL, one row per clip) and label maps (AudioSet's ``class_labels_indices.csv``).

Manifest columns: ``id`` (default: the file stem), ``path`` (relative paths are relative to the
manifest's folder), optional ``start`` / ``end`` seconds, ``labels`` (``;``-separated, each
matched against the label map's ``mid`` first, then its ``display_name``). Multi-head tasks
(EPIC-KITCHENS verb + noun) use a label map with a fourth column ``head`` and labels written
``head:name`` (e.g. ``verb:take;noun:cup``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence

import torch

from avfusion.errors import InputError
from avfusion.tasks import TASK_KINDS

LABEL_SEP = ";"


@dataclass
class Row:
    id: str
    path: str
    start: float | None = None  # seconds from the file's start (its earliest stream), see data/timeline.py
    end: float | None = None
    labels: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    line: int = 0  # where the row stands in its manifest (1-based; a CSV header is line 1); 0 = made in code

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "path": self.path}
        if self.start is not None:
            d["start"] = self.start
        if self.end is not None:
            d["end"] = self.end
        d["labels"] = LABEL_SEP.join(self.labels)
        return d


class ManifestError(InputError):
    pass


@dataclass
class RowProblem:
    """A manifest line that cannot become a row: where, and why."""

    line: int
    reason: str
    id: str = ""
    path: str = ""


def _float(v: Any, what: str) -> float | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, bool):
        raise ManifestError(f"{what} {v!r} is not a number")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ManifestError(f"{what} {v!r} is not a number") from None
    if not math.isfinite(x):
        raise ManifestError(f"{what} {v!r} is not a finite number")
    if x < 0:
        raise ManifestError(f"negative {what} {x:g} (seconds count from the file's start)")
    return x


def _labels(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return [str(x).strip() for x in v if str(x).strip()]
    return [x.strip() for x in str(v).split(LABEL_SEP) if x.strip()]


def row_from_dict(d: dict[str, Any], base: Path | None = None, where: str = "", line: int = 0) -> Row:
    """One manifest record -> Row; a malformed record raises ManifestError prefixed with ``where``."""
    prefix = f"{where}: " if where else ""
    if not isinstance(d, dict):
        raise ManifestError(f"{prefix}a row must be an object with a 'path', got {type(d).__name__}")
    path = d.get("path")
    if path is None or not str(path).strip():
        raise ManifestError(f"{prefix}no 'path'")
    path = str(path).strip()
    if base is not None and not os.path.isabs(path):
        path = str(base / path)
    rid = str(d.get("id") or "").strip() or Path(path).stem
    known = {"id", "path", "start", "end", "labels"}
    try:
        start, end = _float(d.get("start"), "start"), _float(d.get("end"), "end")
        if start is not None and end is not None and end <= start:
            raise ManifestError(f"end {end:g} <= start {start:g}")
    except ManifestError as e:
        raise ManifestError(f"{prefix}{e}") from None
    return Row(id=rid, path=path, start=start, end=end, labels=_labels(d.get("labels")),
               extra={k: v for k, v in d.items() if k not in known}, line=line)


def _open_table(path: str | os.PathLike, what: str) -> IO[str]:
    """A manifest or label map opened for csv / line reading; a folder in its place is one line."""
    try:
        # utf-8-sig: a byte-order mark (Excel, Windows tools) is not part of the first column name
        return open(path, newline="", encoding="utf-8-sig")
    except IsADirectoryError:
        raise ManifestError(f"{path}: is a folder, not {what}") from None


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line, record, problem) for every non-blank record of a CSV / JSONL manifest; a record is
    None when its line is malformed (then ``problem`` says why)."""
    with _open_table(path, "a manifest file") as f:
        try:
            if path.suffix.lower() in (".jsonl", ".json"):
                for i, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        yield i, json.loads(line), ""
                    except json.JSONDecodeError as e:
                        yield i, None, f"invalid JSON: {e.msg} (column {e.colno})"
                return
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return  # empty file
            header = [h.strip() for h in header]
            if "path" not in header:
                raise ManifestError(f"{path}: CSV header {header} has no 'path' column")
            dup = repeated_names(header)
            if dup:
                raise ManifestError(f"{path}: CSV header repeats column(s) {dup}")
            line = reader.line_num + 1
            for rec in reader:
                if not any(c.strip() for c in rec):
                    line = reader.line_num + 1
                    continue
                if len(rec) != len(header):
                    yield line, None, f"{len(rec)} value(s) for the header's {len(header)} column(s)"
                else:
                    yield line, dict(zip(header, rec)), ""
                line = reader.line_num + 1
        except UnicodeDecodeError as e:
            raise ManifestError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                                "save it as UTF-8") from None
        except csv.Error as e:
            raise ManifestError(f"{path}: malformed CSV: {e}") from None


def repeated_names(header: Sequence[str]) -> list[str]:
    """The column names that appear more than once, sorted (one pass over the header)."""
    seen: set[str] = set()
    dup: set[str] = set()
    for h in header:
        (dup if h in seen else seen).add(h)
    return sorted(dup)


def check_manifest(path: str | os.PathLike) -> tuple[list[Row], list[RowProblem]]:
    """Read a ``.csv`` (with a header) or ``.jsonl`` manifest, keeping going past bad lines:
    (good rows, one problem per malformed line, with its line number and reason)."""
    path = Path(path)
    rows: list[Row] = []
    problems: list[RowProblem] = []
    for line, rec, problem in _records(path):
        if rec is None:
            problems.append(RowProblem(line, problem))
            continue
        try:
            rows.append(row_from_dict(rec, path.parent, line=line))
        except ManifestError as e:
            rid = str(rec.get("id") or "").strip() if isinstance(rec, dict) else ""
            problems.append(RowProblem(line, str(e), rid, str(rec.get("path") or "") if isinstance(rec, dict) else ""))
    return rows, problems


def read_manifest(path: str | os.PathLike) -> list[Row]:
    """Read a ``.csv`` (with a header) or ``.jsonl`` manifest. Malformed lines raise one
    ManifestError naming each (up to ten) with its line number."""
    rows, problems = check_manifest(path)
    if problems:
        shown = "; ".join(f"line {p.line}: {p.reason}" for p in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ManifestError(f"{path}: {len(problems)} malformed row(s): {shown}{more}; "
                            "`avfusion validate` lists them all")
    return rows


def write_manifest(rows: Iterable[Row], path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    if path.suffix.lower() in (".jsonl", ".json"):
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r.to_dict()) + "\n")
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "path", "start", "end", "labels"])
        w.writeheader()
        for r in rows:
            w.writerow(r.to_dict())


def split_missing(rows: Sequence[Row]) -> tuple[list[Row], list[Row]]:
    """(rows whose path exists, rows whose path does not): callers report the second list. A path
    that exists but is no media file (a folder, a FIFO, a device, an empty file) is the decoder's
    to name (avfusion.data.decode.file_problem), in the same words everywhere."""
    present, missing = [], []
    for r in rows:
        (present if os.path.exists(r.path) else missing).append(r)
    return present, missing


@dataclass
class LabelEntry:
    index: int
    mid: str
    display_name: str
    head: str | None = None


class UnknownLabel(KeyError):
    def __str__(self) -> str:
        return f"unknown label {self.args[0]!r}"


def _label_entry(rec: list[str], col: dict[str, int], header: list[str], out: list[LabelEntry]) -> str:
    """Append the label-map row ``rec`` to ``out``; return what is wrong with it instead, if anything."""
    if len(rec) != len(header):
        return f"{len(rec)} value(s) for the header's {len(header)} column(s)"
    index, mid, name = (rec[col[k]].strip() for k in ("index", "mid", "display_name"))
    try:
        i = int(index)
    except ValueError:
        return f"index {index!r} is not an integer"
    if not mid:
        return "empty mid"
    head = rec[col["head"]].strip() or None if "head" in col else None
    out.append(LabelEntry(i, mid, name or mid, head))
    return ""


class LabelMap:
    """Class list in ``index,mid,display_name[,head]`` layout.

    ``mode``: the task kind (avfusion.tasks): ``multilabel`` (multi-hot float), ``single`` (int),
    ``multihead`` (dict of ints); the default comes from the map (heads -> multihead, else
    multilabel).
    """

    def __init__(self, entries: Sequence[LabelEntry], mode: str | None = None) -> None:
        self.entries = list(entries)
        self.heads: list[str] = []
        for e in self.entries:
            if e.head is not None and e.head not in self.heads:
                self.heads.append(e.head)
        if self.heads and any(e.head is None for e in self.entries):
            raise ManifestError("label map: some entries have a head and some do not")
        self.mode = mode or ("multihead" if self.heads else "multilabel")
        if self.mode not in TASK_KINDS:
            raise ManifestError(f"task must be one of {', '.join(TASK_KINDS)}, got {self.mode!r}")
        if (self.mode == "multihead") != bool(self.heads):
            raise ManifestError("task 'multihead' needs (and only works with) a label map with a 'head' column")
        self._lookup: dict[tuple[str | None, str], LabelEntry] = {}
        # mids win over display names; a display name equal to another entry's mid is ignored
        for e in self.entries:
            self._lookup[(e.head, e.mid)] = e
        for e in self.entries:
            self._lookup.setdefault((e.head, e.display_name), e)
        for h in self.heads or [None]:
            idx = sorted(e.index for e in self.entries if e.head == h)
            if idx != list(range(len(idx))):
                raise ManifestError(f"label map{'' if h is None else f' head {h!r}'}: indices must be 0..n-1")

    @property
    def num_classes(self) -> int:
        return len(self.entries)

    def head_sizes(self) -> dict[str, int]:
        return {h: sum(1 for e in self.entries if e.head == h) for h in self.heads}

    @property
    def names(self) -> list[str]:
        return [e.display_name for e in sorted(self.entries, key=lambda e: (self.heads.index(e.head) if e.head else 0, e.index))]

    def lookup(self, label: str) -> LabelEntry:
        head: str | None = None
        name = label
        if self.heads:
            head, sep, name = label.partition(":")
            if not sep or head not in self.heads:
                raise UnknownLabel(label)
        e = self._lookup.get((head, name))
        if e is None:
            raise UnknownLabel(label)
        return e

    def unknown(self, labels: Iterable[str]) -> list[str]:
        bad = []
        for lab in labels:
            try:
                self.lookup(lab)
            except UnknownLabel:
                bad.append(lab)
        return bad

    def encode(self, labels: Sequence[str]) -> Any:
        """Labels -> multi-hot float (C,), int, or {head: int}; unknown labels raise."""
        found = [self.lookup(lab) for lab in labels]
        if self.mode == "multilabel":
            y = torch.zeros(self.num_classes)
            for e in found:
                y[e.index] = 1.0
            return y
        if self.mode == "single":
            if len(found) != 1:
                raise ManifestError(f"single-label mode needs exactly one label, got {list(labels)}")
            return found[0].index
        out: dict[str, int] = {}
        for e in found:
            assert e.head is not None
            if e.head in out:
                raise ManifestError(f"two labels for head {e.head!r}: {list(labels)}")
            out[e.head] = e.index
        missing = [h for h in self.heads if h not in out]
        if missing:
            raise ManifestError(f"no label for head(s) {missing}: {list(labels)}")
        return out

    # -- I/O ------------------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | os.PathLike, mode: str | None = None) -> "LabelMap":
        """Read ``index,mid,display_name[,head]``; every malformed row is named with its line."""
        entries: list[LabelEntry] = []
        problems: list[str] = []
        with _open_table(path, "a label map") as f:
            try:
                reader = csv.reader(f)
                header = [h.strip() for h in next(reader, [])]
                if not {"index", "mid", "display_name"} <= set(header):
                    raise ManifestError(f"{path}: label map needs columns index,mid,display_name; got {header}")
                col: dict[str, int] = {}
                for i, h in enumerate(header):  # the first column of a name (one pass: 40k columns stay fast)
                    col.setdefault(h, i)
                line = reader.line_num + 1
                for rec in reader:
                    if any(c.strip() for c in rec):
                        problem = _label_entry(rec, col, header, entries)
                        if problem:
                            problems.append(f"line {line}: {problem}")
                    line = reader.line_num + 1
            except UnicodeDecodeError as e:
                raise ManifestError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
            except csv.Error as e:
                raise ManifestError(f"{path}: malformed CSV: {e}") from None
        seen: dict[tuple[str | None, str], int] = {}
        for e in entries:
            key = (e.head, e.mid)
            if key in seen:
                problems.append(f"mid {e.mid!r}{'' if e.head is None else f' (head {e.head!r})'} appears twice "
                                f"(indices {seen[key]} and {e.index})")
            seen[key] = e.index
        if problems:
            shown = "; ".join(problems[:10]) + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else "")
            raise ManifestError(f"{path}: {len(problems)} problem(s) in the label map: {shown}")
        try:
            return cls(entries, mode)
        except ManifestError as e:
            raise ManifestError(f"{path}: {e}") from None

    @classmethod
    def from_names(cls, names: Sequence[str], mode: str | None = None, head: str | None = None) -> "LabelMap":
        return cls([LabelEntry(i, n, n, head) for i, n in enumerate(names)], mode)

    def to_csv(self) -> str:
        """The map in its CSV layout, as :meth:`write` stores it."""
        f = io.StringIO()
        fields = ["index", "mid", "display_name"] + (["head"] if self.heads else [])
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for e in self.entries:
            d = {"index": e.index, "mid": e.mid, "display_name": e.display_name}
            if self.heads:
                d["head"] = e.head
            w.writerow(d)
        return f.getvalue()

    def digest(self) -> str:
        """SHA-1 of :meth:`to_csv`: the same for the same classes, indices and heads."""
        return hashlib.sha1(self.to_csv().encode()).hexdigest()

    def write(self, path: str | os.PathLike) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            f.write(self.to_csv())
