"""Manifests (CSV / JSONL, one row per clip) and label maps (AudioSet's ``class_labels_indices.csv``).

Manifest columns: ``id`` (default: the file stem), ``path`` (relative paths are relative to the
manifest's folder), optional ``start`` / ``end`` seconds, ``labels`` (``;``-separated, each
matched against the label map's ``mid`` first, then its ``display_name``). Multi-head tasks
(EPIC-KITCHENS verb + noun) use a label map with a fourth column ``head`` and labels written
``head:name`` (e.g. ``verb:take;noun:cup``).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from avfusion.errors import InputError

LABEL_SEP = ";"


@dataclass
class Row:
    id: str
    path: str
    start: float | None = None
    end: float | None = None
    labels: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

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


def _float(v: Any, what: str, where: str) -> float | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: {what} {v!r} is not a number") from None


def _labels(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return [str(x).strip() for x in v if str(x).strip()]
    return [x.strip() for x in str(v).split(LABEL_SEP) if x.strip()]


def row_from_dict(d: dict[str, Any], base: Path | None = None, where: str = "") -> Row:
    path = d.get("path")
    if not path:
        raise ManifestError(f"{where}: no 'path'")
    path = str(path)
    if base is not None and not os.path.isabs(path):
        path = str(base / path)
    rid = str(d.get("id") or "").strip() or Path(path).stem
    known = {"id", "path", "start", "end", "labels"}
    return Row(
        id=rid,
        path=path,
        start=_float(d.get("start"), "start", where),
        end=_float(d.get("end"), "end", where),
        labels=_labels(d.get("labels")),
        extra={k: v for k, v in d.items() if k not in known},
    )


def read_manifest(path: str | os.PathLike) -> list[Row]:
    """Read a ``.csv`` (with a header) or ``.jsonl`` manifest. Malformed rows raise with their line."""
    path = Path(path)
    base = path.parent
    rows: list[Row] = []
    if path.suffix.lower() in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ManifestError(f"{path}:{i}: invalid JSON: {e}") from None
                rows.append(row_from_dict(d, base, f"{path}:{i}"))
        return rows
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            return rows  # empty file
        if "path" not in reader.fieldnames:
            raise ManifestError(f"{path}: CSV header {reader.fieldnames} has no 'path' column")
        for i, d in enumerate(reader, 2):
            rows.append(row_from_dict(d, base, f"{path}:{i}"))
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
    """(rows whose file exists, rows whose file is missing): callers report the second list."""
    present, missing = [], []
    for r in rows:
        (present if os.path.isfile(r.path) else missing).append(r)
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


class LabelMap:
    """Class list in ``index,mid,display_name[,head]`` layout.

    ``mode``: ``multi`` (multi-hot float), ``single`` (int), ``multihead`` (dict of ints), chosen
    by :meth:`encode` callers; the default comes from the map (heads -> multihead, else multi).
    """

    def __init__(self, entries: Sequence[LabelEntry], mode: str | None = None) -> None:
        self.entries = list(entries)
        self.heads: list[str] = []
        for e in self.entries:
            if e.head is not None and e.head not in self.heads:
                self.heads.append(e.head)
        if self.heads and any(e.head is None for e in self.entries):
            raise ManifestError("label map: some entries have a head and some do not")
        self.mode = mode or ("multihead" if self.heads else "multi")
        if self.mode not in ("multi", "single", "multihead"):
            raise ManifestError(f"label mode must be multi, single or multihead, got {self.mode!r}")
        if (self.mode == "multihead") != bool(self.heads):
            raise ManifestError("label mode 'multihead' needs (and only works with) a 'head' column")
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
        if self.mode == "multi":
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
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = set(reader.fieldnames or [])
            if not {"index", "mid", "display_name"} <= cols:
                raise ManifestError(f"{path}: label map needs columns index,mid,display_name; got {reader.fieldnames}")
            entries = [
                LabelEntry(int(d["index"]), d["mid"].strip(), d["display_name"].strip(), (d.get("head") or "").strip() or None)
                for d in reader
            ]
        return cls(entries, mode)

    @classmethod
    def from_names(cls, names: Sequence[str], mode: str | None = None, head: str | None = None) -> "LabelMap":
        return cls([LabelEntry(i, n, n, head) for i, n in enumerate(names)], mode)

    def write(self, path: str | os.PathLike) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            fields = ["index", "mid", "display_name"] + (["head"] if self.heads else [])
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            for e in self.entries:
                d = {"index": e.index, "mid": e.mid, "display_name": e.display_name}
                if self.heads:
                    d["head"] = e.head
                w.writerow(d)
