"""Batch inference over a corpus: the one resumable runner behind ``avfusion predict --data``,
``avfusion embed`` and ``predict --timeline --data`` (every row of a source, resumable, split over
torchrun ranks).

The runner (:func:`run_corpus`) owns the run record, the lock, resume, the split over ranks, the
progress bar and the merge; a :class:`CorpusJob` says what is computed and written for each row:
its ``settings`` (recorded), its part writer (``make_parts``: JSON lines, npz chunks) and either
``per_row``, a hook that computes one manifest row's answer itself (the timeline of the row's
file), or nothing, and then the runner decodes each row's clips and runs the model on batches of
rows (predict, embed).

Rows. A source (avfusion.data.sources) is a manifest or prepared shards. Manifest rows are decoded
from their files (their ``start`` / ``end`` segment), shard samples from what prepare stored. As in
single-file predict, each row is cut into ``clips`` uniformly spaced clips (centre crop); the model
runs on the modalities the row really has (rows are grouped by presence, so a model's
missing-modality path is used honestly) and the per-clip logits and features are averaged.

A row that cannot be used (a missing, empty or undecodable file, a malformed manifest line, a
repeated id, only a modality the model does not take) is a result with an ``error`` naming why,
and the run goes on. A shard that cannot be read at all stops the run with one line naming it
(what was finished is kept: fix the shard and rerun).

Resume. ``OUT.run.json`` records what the run is for (the model's config and weights, sha256; the
source; the settings); results go first to ``OUT.parts/``: predict appends one line per row to its
rank's file, flushed at once; embed writes chunks of rows to a temporary file and renames it. A
rerun reads the ids already in the parts and skips them (shards: before decoding, through
``ShardDataset(exclude=...)``). When every rank is done, rank 0 merges the parts into OUT (a
temporary file, then a rename), marks the record complete and removes the parts. A rerun of a
complete run does nothing and says so; a run into an OUT recorded for another model, source or
settings is refused, and so is an OUT that no run recorded. Rows answered with an error are
finished rows too: a rerun does not retry them.

torchrun. Each rank takes a disjoint part: manifest rows by ``shard_indices(n, pad=False)`` over all
rows (so the split never depends on what an earlier run finished), shards split by rank in
ShardDataset; each rank appends to its own part files. After a barrier (on a gloo group with a long
timeout: ranks may finish far apart) rank 0 merges: each id once, in manifest order (shards: shard
order, then sample order). The parts folder must be shared by the ranks (one node, or a shared
file system).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Protocol, Sequence

import torch
from torch.utils.data import DataLoader, IterableDataset

from avfusion.data.clips import ClipConfig, ClipProcessor, MediaSegment
from avfusion.data.datasets import VideoDataset, worker_init
from avfusion.data.manifest import Row, check_manifest, split_missing
from avfusion.data.shards import ShardDataset, ShardSegment
from avfusion.data.sources import URL_PREFIXES, Source, resolve
from avfusion.errors import ConfigError, InputError, UserError
from avfusion.utils.output import json_safe
from avfusion.infer.predict import answer, segment_streams, usable_modalities
from avfusion.utils.distributed import DistInfo, barrier, gather_objects, shard_indices
from avfusion.models.pretrained import model_fingerprint
from avfusion.utils.files import atomic_json
from avfusion.utils.lock import LOCK_NAME, FolderLock, hold_folder
from avfusion.utils.progress import progress_bar

RECORD_SUFFIX = ".run.json"
PARTS_SUFFIX = ".parts"
# How long the ranks that finished wait for the slowest at the end (one rank may hold a shard more).
FINAL_WAIT = timedelta(hours=24)


def record_path(out: Path) -> Path:
    return out.with_name(out.name + RECORD_SUFFIX)


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + PARTS_SUFFIX)


# -- rows ------------------------------------------------------------------------------------


@dataclass
class RowResult:
    """What the model made of one row, or (``error``) why the row could not be used."""

    id: str
    order: str  # sort key of the row in its source: manifest line, or shard number / sample key
    path: str | None = None  # the media file (manifest rows)
    error: str | None = None
    sample: dict[str, Any] = field(default_factory=dict)  # what decoding found: flags, damage, notes, padding
    streams: dict[str, Any] = field(default_factory=dict)  # infer.predict.segment_streams
    scores: dict[str, torch.Tensor] = field(default_factory=dict)  # output -> (C,) logits, mean over clips
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # output -> (D,) features, mean over clips
    notes: list[str] = field(default_factory=list)  # ModelOutput.notes of the row's forward pass
    answer: dict[str, Any] = field(default_factory=dict)  # a per-row hook's output fields (CorpusJob.per_row)


def manifest_order(line: int) -> str:
    return f"{line:09d}"


class _Describe(ClipProcessor):
    """Evaluation clips, plus where the file's streams lie (the notes and coverage need it)."""

    def __call__(self, seg: MediaSegment, generator: torch.Generator | None = None) -> dict[str, Any]:
        sample = super().__call__(seg, generator)
        sample["streams"] = segment_streams(seg)
        return sample


class ManifestRows(VideoDataset):
    """Manifest rows for inference: no labels; a damaged file is answered from what decodes
    (``damaged="report"``); a row that cannot be used comes back as an error marker. Rows whose
    file is missing are left out and listed in ``self.missing``."""

    def __init__(self, rows: Sequence[Row], cfg: ClipConfig) -> None:
        super().__init__(rows, None, cfg, train=False, missing="skip", on_error="mark", damaged="report")
        self.proc = _Describe(cfg, train=False)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = super().__getitem__(i)
        row = self.rows[i]
        sample["order"], sample["path"] = manifest_order(row.line), row.path
        return sample


class ShardRows(IterableDataset):
    """Prepared samples for inference, split by rank (and loader worker) as ShardDataset splits
    them, without the ids in ``exclude``; a sample that cannot be used is an error marker."""

    def __init__(self, source: Source, cfg: ClipConfig, info: DistInfo, exclude: Iterable[str] = ()) -> None:
        # Only raw() is used: reading, splitting and exclusion; it needs no label map.
        self.reader = ShardDataset(source, None, cfg, train=False, rank=info.rank,  # type: ignore[arg-type]
                                   world_size=info.world_size, exclude=frozenset(exclude))
        self.number = {url: i for i, url in enumerate(self.reader.shards)}
        self.proc = _Describe(cfg, train=False)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for raw in _until_fatal(self.reader.raw()):
            if "fatal" in raw:
                yield raw
                return
            url, key = raw.get("__url__", ""), raw.get("__key__", "")
            where = {"order": f"{self.number.get(url, 0):06d}/{key}", "path": None}
            sid = f"{url} sample {key}"  # until its JSON says
            try:
                seg = ShardSegment(raw)  # an error here names the shard and sample
                sid = str(seg.meta["id"])
                sample = self.proc(seg)
            except InputError as e:
                msg = str(e) if str(e).startswith(url) else f"{url} sample {key} ({sid!r}): {e}"
                yield {"id": sid, "error": msg, **where}
                continue
            yield {**sample, "id": sid, **where}


def _until_fatal(raws: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The samples, then ``{"fatal": message}`` if a shard cannot be read: the main process raises
    it as itself (a loader worker's exception would come back wrapped in its traceback)."""
    try:
        yield from raws
    except InputError as e:
        yield {"fatal": str(e)}


def read_rows(manifest: Path) -> tuple[list[Row], list[RowResult]]:
    """A manifest's usable rows, and an error result for every malformed line and repeated id
    (those need no decoding: rank 0 adds them at the merge)."""
    rows, problems = check_manifest(manifest)
    if not rows and not problems:
        raise InputError(f"{manifest}: no rows")
    static = [RowResult(p.id, manifest_order(p.line), p.path or None, error=f"line {p.line}: {p.reason}")
              for p in problems]
    first: dict[str, Row] = {}
    usable = []
    for row in rows:
        if row.id in first:  # the same words as validate's and prepare's
            static.append(RowResult(row.id, manifest_order(row.line), row.path,
                                    error=f"row {row.id!r} (line {row.line}): duplicate id (first on line "
                                          f"{first[row.id].line})"))
        else:
            first[row.id] = row
            usable.append(row)
    return usable, static


def not_prepared(src: Source) -> list[RowResult]:
    """The rows prepare could not write into a folder of shards (its prepare.json), as errors after
    the shards' rows: they are rows of the corpus too, never silently missing."""
    failures = (src.prepared or {}).get("failures") or []
    return [RowResult(str(f.get("id") or ""), f"~{int(f.get('line') or 0):09d}", f.get("path") or None,
                      error=f"not in the shards: prepare could not use it ({f.get('reason')})")
            for f in failures if isinstance(f, dict)]


def _as_list(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return samples  # batches stay lists: rows are grouped by the modalities they have, then stacked


def _per_row(named: dict[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
    """name -> (rows * K, X) per clip  ->  name -> (rows, X): the mean over each row's K clips."""
    return {n: v.float().reshape(rows, -1, v.shape[-1]).mean(1).cpu() for n, v in named.items()}


@torch.no_grad()
def run_rows(model: torch.nn.Module, batches: Iterable[list[dict[str, Any]]]) -> Iterator[RowResult]:
    """Run the model on batches of samples (lists, as ``ManifestRows`` / ``ShardRows`` give them):
    one RowResult per sample or error marker, in no particular order. A shard that could not be
    read (a ``fatal`` marker) raises InputError once the rest of its batch is answered."""
    cfg = model.cfg
    device = next(model.parameters()).device
    model.eval()
    for batch in batches:
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        fatal = [s["fatal"] for s in batch if "fatal" in s]
        for s in (s for s in batch if "fatal" not in s):
            rid, where = str(s["id"]), (s["order"], s.get("path"))
            if "error" in s:
                yield RowResult(rid, *where, error=s["error"])
                continue
            try:
                present = usable_modalities(cfg, s, s.get("path") or rid)
            except InputError as e:
                yield RowResult(rid, *where, error=str(e))
                continue
            groups.setdefault(present, []).append(s)
        for present, group in groups.items():
            b = len(group)
            # each sample holds K clips: (K, 3, T, H, W) / (K, T_a, F) -> (b * K, ...)
            out = model({m: torch.stack([s[m] for s in group]).flatten(0, 1).to(device) for m in present})
            scores = _per_row({"logits": out.logits, **out.outputs}, b)  # name -> (b, C)
            feats = _per_row(out.features, b)  # name -> (b, D)
            for i, s in enumerate(group):
                yield RowResult(str(s["id"]), s["order"], s.get("path"),
                                sample={k: v for k, v in s.items() if k not in ("video", "audio", "streams")},
                                streams=s["streams"], scores={n: v[i] for n, v in scores.items()},
                                features={n: v[i] for n, v in feats.items()}, notes=list(out.notes))
        if fatal:  # after the batch's other rows: they are kept
            raise InputError(fatal[0])


# -- what a run is for: the record beside OUT -----------------------------------------------


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_settings(model: torch.nn.Module) -> dict[str, str]:
    """The precision a model prepared for inference runs at (infer/fast.py), for a run's settings:
    empty for fp32, so runs recorded before precisions existed still resume; ``--compile`` is left
    out (it does not change the results)."""
    precision = getattr(model, "precision", "fp32")
    return {} if precision == "fp32" else {"precision": precision}


def source_fingerprint(src: Source) -> dict[str, str]:
    """A manifest: its absolute path and the sha256 of its text; shards: the spec and the sha256 of
    the list of shards it names (local paths made absolute)."""
    if src.manifest is not None:
        return {"manifest": str(src.manifest.resolve()), "sha256": _sha256_file(src.manifest)}
    urls = [u if u.startswith(URL_PREFIXES) else os.path.abspath(u) for u in src.shards]
    spec = src.spec if src.spec.startswith(URL_PREFIXES) or "::" in src.spec else os.path.abspath(src.spec)
    return {"shards": spec, "sha256": hashlib.sha256("\n".join(urls).encode()).hexdigest()}


def _read_record(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text())
    except ValueError as e:
        raise InputError(f"{path}: not valid JSON ({e}); delete it to start over") from None
    if not isinstance(rec, dict):
        raise InputError(f"{path}: not a run record; delete it to start over")
    return rec


def _show(what: str, value: Any) -> str:
    if not isinstance(value, dict):
        return json.dumps(value)
    name = value.get("name") if what == "model" else value.get("manifest") or value.get("shards")
    return f"{name}, sha256 {str(value.get('sha256'))[:12]}"


def _same_run(old: dict[str, Any], new: dict[str, Any], out: Path) -> None:
    for key in ("settings", "model", "source"):
        was, now = old.get(key), new[key]
        if was == now:
            continue
        if key == "settings" and isinstance(was, dict):
            diff = ", ".join(f"{k} {was.get(k)} (now {now.get(k)})" for k in sorted({*was, *now})
                             if was.get(k) != now.get(k))
        else:
            diff = f"{key} {_show(key, was)} (now {_show(key, now)})"
        raise ConfigError(f"{out} belongs to another run: {diff}; use another --out, or delete {out}, "
                          f"{record_path(out).name} and {parts_dir(out).name} to start over")


def claim(out: Path, record: dict[str, Any]) -> tuple[bool, FolderLock | None]:
    """Rank 0, before any work: (True, None) when OUT is complete for this very run; else lock the
    parts folder, record the run (resuming one recorded for the same model, source and settings)
    and return (False, lock). Anything else in the way is refused in one line."""
    rec_path, parts = record_path(out), parts_dir(out)
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder; name the file to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    old = _read_record(rec_path)
    if old is not None and old.get("complete") and out.exists():
        _same_run(old, record, out)
        return True, None
    if old is None and (out.exists() or parts.exists()):
        what = out if out.exists() else parts
        raise ConfigError(f"{what} exists but no {rec_path.name} says which run wrote it; use another --out, or "
                          "delete it")
    had_parts = parts.exists()
    lock = hold_folder(parts, label=str(out))
    try:
        old = _read_record(rec_path)  # again, now that no other run can change it
        if old is not None and old.get("complete"):
            # OUT was deleted after a complete run: start over, without the earlier run's leftovers.
            for p in parts.iterdir():
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.name != LOCK_NAME:
                    p.unlink()
        elif old is not None and had_parts:  # resuming: only the same run may add to its parts
            _same_run(old, record, out)
        atomic_json(rec_path, {**record, "complete": False})
    except BaseException:
        lock.close()
        raise
    return False, lock


# -- part files ---------------------------------------------------------------------------------


class Parts(Protocol):
    """Where one rank's results go until the merge (predict: JSON lines; embed: npz chunks)."""

    def done(self) -> set[str]:
        """Ids finished in the parts of every rank (this run's or an earlier one's)."""

    def add(self, result: RowResult) -> None: ...

    def close(self) -> None:
        """Make everything added durable (called on success and on failure)."""

    def merge(self, out: Path, static: Sequence[RowResult], record: dict[str, Any]) -> tuple[int, int]:
        """Rank 0, once every rank closed: write OUT (each id once, in source order) through a
        temporary file and a rename; (rows written, of which errors)."""


# -- the run ------------------------------------------------------------------------------------


@dataclass
class CorpusSummary:
    out: Path
    rows: int = 0  # rows in OUT: answered and errors
    errors: int = 0
    computed: int = 0  # rows this run worked on (all ranks)
    resumed: int = 0  # rows an earlier run had finished
    already_complete: bool = False  # OUT was complete for this run: nothing was done

    def describe(self) -> str:
        counts = f"{_plural(self.rows, 'row')}, {_plural(self.errors, 'error')}"
        if self.already_complete:
            return f"{self.out} is already complete ({counts}): nothing to do"
        earlier = f", {self.resumed} done by an earlier run" if self.resumed else ""
        return f"{self.out}: {counts}; {self.computed} computed now{earlier}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _final_group(info: DistInfo) -> Any:
    """A gloo group for the last barrier, with a timeout long enough for the slowest rank."""
    if not info.enabled:
        return None
    import torch.distributed as dist

    return dist.new_group(backend="gloo", timeout=FINAL_WAIT)


RowHook = Callable[[Row], dict[str, Any]]
"""Computes one manifest row's answer (the fields of its output line) from the row itself; raises
UserError or OSError for a row that cannot be used (the runner writes it as that row's error)."""


@dataclass(frozen=True)
class CorpusJob:
    """What a corpus run computes and writes for each row (the runner does the rest).

    ``settings`` are recorded with the run (with the command's name) and must match on resume;
    ``make_parts(folder, rank)`` makes the rank's part writer; ``per_row``, when given, computes
    each manifest row's answer itself (a timeline); without it each row's ``clips`` clips are
    decoded (``workers`` loader processes) and the model runs on ``batch_size`` rows at a time."""

    settings: dict[str, Any]
    make_parts: Callable[[Path, int], Parts]
    per_row: RowHook | None = None
    clips: int = 4
    batch_size: int = 8
    workers: int = 0


def run_corpus(model: torch.nn.Module, source: str | os.PathLike | Source, out: str | os.PathLike, job: CorpusJob,
               info: DistInfo = DistInfo(), progress: bool = False) -> CorpusSummary:
    """Compute ``job`` for every row of ``source`` not yet finished in ``OUT.parts``, then (rank 0)
    merge into ``out``; see the module docstring. ``model`` is what the run record names (its
    config and weights), and what runs on the decoded clips when ``job`` has no ``per_row``."""
    out = Path(out)
    src = source if isinstance(source, Source) else resolve(source)
    if job.per_row is not None and src.manifest is None:
        raise ConfigError(f"{src.spec}: {job.settings.get('command', 'this run')} needs the media files (a manifest); "
                          "shards hold prepared clips")
    rows, static = read_rows(src.manifest) if src.manifest is not None else ([], not_prepared(src))
    group = _final_group(info)  # every rank creates it, at the same point
    record: dict[str, Any] = {}
    lock = None
    if info.is_main:
        record = {"settings": job.settings, "model": model_fingerprint(model), "source": source_fingerprint(src)}
        _, lock = claim(out, record)
    barrier(info)  # no rank starts before rank 0 has checked and recorded the run: all read its verdict
    try:
        rec = _read_record(record_path(out)) or {}
        if rec.get("complete") and out.exists():
            return CorpusSummary(out, rec.get("rows", 0), rec.get("errors", 0), already_complete=True)
        parts = job.make_parts(parts_dir(out), info.rank)
        done = parts.done()
        total: int | None = None
        if src.manifest is not None:
            mine, missing = split_missing([rows[i] for i in shard_indices(len(rows), info, pad=False)
                                           if rows[i].id not in done])
            results: Iterable[RowResult] = [RowResult(r.id, manifest_order(r.line), r.path,
                                                      error=f"row {r.id!r} (line {r.line}): file not found [{r.path}]")
                                            for r in missing]
            total = len(mine) + len(missing)
            if job.per_row is not None:
                results = itertools.chain(results, (_hook_row(job.per_row, r) for r in mine))
            else:
                results = itertools.chain(results, run_rows(model, _loader(ManifestRows(mine, _clips(model, job)), job)))
        else:
            results = run_rows(model, _loader(ShardRows(src, _clips(model, job), info, done), job))
        bar = progress_bar(total, str(job.settings.get("command", "rows")), "row", progress and info.is_main)
        computed = 0
        try:
            for result in results:
                parts.add(result)
                computed += 1
                bar.update()
        finally:
            parts.close()
            bar.close()
        return _finish(parts, out, static, record, computed, len(done), info, group)
    finally:
        if lock is not None:
            lock.close()


def _clips(model: torch.nn.Module, job: CorpusJob) -> ClipConfig:
    return ClipConfig.from_model(model.cfg, eval_clips=job.clips, eval_crops=1)


def _loader(dataset: Any, job: CorpusJob) -> DataLoader:
    return DataLoader(dataset, batch_size=job.batch_size, collate_fn=_as_list, num_workers=job.workers,
                      worker_init_fn=worker_init if job.workers else None)


def _hook_row(hook: RowHook, row: Row) -> RowResult:
    """A per-row hook's answer for ``row``, or the error that names the row, its line and file."""
    where = (row.id, manifest_order(row.line), row.path)
    try:
        return RowResult(*where, answer=hook(row))
    except (UserError, OSError) as e:
        why = str(e).replace(f"{row.path}: ", "")
        return RowResult(*where, error=f"row {row.id!r} (line {row.line}): {why} [{row.path}]")


def _finish(parts: Parts, out: Path, static: Any, record: dict[str, Any], computed: int, resumed: int,
            info: DistInfo, group: Any) -> CorpusSummary:
    """The end of a corpus run, once every rank's part is closed: wait for all ranks, count what
    they computed, and on the main rank merge the parts into ``out``, mark the run record complete
    and remove the parts folder (the lock file goes with it)."""
    if group is not None:
        torch.distributed.barrier(group=group)
    counts = gather_objects(computed, info)
    summary = CorpusSummary(out, computed=sum(counts), resumed=resumed)  # type: ignore[arg-type]
    if info.is_main:
        summary.rows, summary.errors = parts.merge(out, static, record)
        atomic_json(record_path(out), {**record, "complete": True, "rows": summary.rows, "errors": summary.errors})
        shutil.rmtree(parts_dir(out))
    return summary


# -- predict: JSON lines -----------------------------------------------------------------------


def _head(result: RowResult) -> dict[str, Any]:
    head: dict[str, Any] = {"id": result.id or None}
    if result.path:
        head["path"] = result.path
    return head


def result_line(result: RowResult) -> dict[str, Any]:
    """A per-row hook's output line: id, path (manifest rows), and the hook's fields or ``error``."""
    if result.error is not None:
        return {**_head(result), "error": result.error}
    return json_safe({**_head(result), **result.answer})


def predict_line(result: RowResult, cfg: Any, top_k: int) -> dict[str, Any]:
    """One output line: id, path (manifest rows), and either the prediction (flags, top labels per
    output, notes, coverage: infer.predict.answer, as single-file predict) or ``error``."""
    head = _head(result)
    if result.error is not None:
        return {**head, "error": result.error}
    name = Path(result.path).name if result.path else result.id
    ans = answer(cfg, result.sample, result.streams, result.scores, result.notes, name, top_k)
    return json_safe({**head, "has_audio": ans["has_audio"], "has_video": ans["has_video"], "outputs": ans["outputs"],
                      "notes": ans["notes"], "coverage": ans["coverage"]})


def _parse(text: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) and "id" in obj else None


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that a killed run left without its newline."""
    with open(path, "rb+") as f:
        size = pos = f.seek(0, os.SEEK_END)
        keep = 0
        while pos > 0:
            step = min(1 << 16, pos)
            f.seek(pos - step)
            i = f.read(step).rfind(b"\n")
            if i >= 0:
                keep = pos - step + i + 1
                break
            pos -= step
        if keep < size:
            f.truncate(keep)


class JsonlParts:
    """JSON-lines parts (predict, timelines): ``rank-RRR.jsonl`` per rank, one ``ORDER<TAB>JSON``
    line per row (``line(result)``), flushed as it is written (a kill loses at most the line being
    written, which the rerun drops)."""

    PATTERN = "rank-*.jsonl"

    def __init__(self, folder: Path, rank: int, line: Callable[[RowResult], dict[str, Any]] = result_line) -> None:
        self.folder, self.path, self.line = folder, folder / f"rank-{rank:03d}.jsonl", line
        self.file: IO[str] | None = None

    def _entries(self) -> Iterator[tuple[str, str, bool, int, int, int]]:
        """(order, id, is_error, file number, offset, length) of every whole line of every part."""
        for k, path in enumerate(self._files()):
            with open(path, "rb") as f:
                offset = 0
                for raw in f:
                    order, _, text = raw.partition(b"\t")
                    obj = _parse(text) if raw.endswith(b"\n") else None  # a torn last line is no result
                    if obj is not None:
                        yield order.decode(), str(obj["id"]), "error" in obj, k, offset + len(order) + 1, len(text) - 1
                    offset += len(raw)

    def _files(self) -> list[Path]:
        return sorted(self.folder.glob(self.PATTERN))

    def done(self) -> set[str]:
        return {e[1] for e in self._entries()}

    def add(self, result: RowResult) -> None:
        if self.file is None:
            if self.path.exists():
                _drop_torn_tail(self.path)
            self.file = open(self.path, "a", encoding="utf-8")
        line = json.dumps(self.line(result), allow_nan=False)
        self.file.write(f"{result.order}\t{line}\n")
        self.file.flush()  # in the kernel's hands: a killed process loses nothing written

    def close(self) -> None:
        if self.file is not None:
            os.fsync(self.file.fileno())
            self.file.close()
            self.file = None

    def merge(self, out: Path, static: Sequence[RowResult], record: dict[str, Any]) -> tuple[int, int]:
        # Sort by source order; where an id is there twice (it cannot be, short of two runs
        # racing), the first line wins. Lines are copied from the parts, not held in memory.
        entries: list[tuple[str, str, bool, int, int, int]] = sorted(self._entries())
        seen: set[str] = set()
        lines: list[tuple[str, Any]] = []
        errors = 0
        for order, rid, is_error, k, offset, length in entries:
            if rid in seen:
                continue
            seen.add(rid)
            errors += is_error
            lines.append((order, (k, offset, length)))
        for r in static:
            lines.append((r.order, json.dumps(self.line(r), allow_nan=False)))
            errors += 1
        lines.sort(key=lambda x: x[0])
        files = [open(p, "rb") for p in self._files()]
        tmp = out.with_name(f".{out.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                for _, where in lines:
                    if isinstance(where, str):
                        f.write(where.encode() + b"\n")
                        continue
                    k, offset, length = where
                    files[k].seek(offset)
                    f.write(files[k].read(length) + b"\n")
                f.flush()
                os.fsync(f.fileno())
        finally:
            for fh in files:
                fh.close()
        os.replace(tmp, out)
        return len(lines), errors


def predict_corpus(model: torch.nn.Module, source: str | os.PathLike | Source, out: str | os.PathLike,
                   top_k: int = 5, clips: int = 4, batch_size: int = 8, workers: int = 0,
                   info: DistInfo = DistInfo(), progress: bool = False) -> CorpusSummary:
    """Top labels per output for every row of ``source``, one JSON line per row in ``out``
    (``predict_line``); resumable and torchrun-aware (see the module docstring)."""
    cfg = model.cfg
    job = CorpusJob({"command": "predict", "clips": clips, "top_k": top_k, **record_settings(model)},
                    lambda folder, rank: JsonlParts(folder, rank, lambda r: predict_line(r, cfg, top_k)),
                    clips=clips, batch_size=batch_size, workers=workers)
    return run_corpus(model, source, out, job, info, progress)


__all__ = ["RowResult", "CorpusSummary", "CorpusJob", "RowHook", "ManifestRows", "ShardRows", "JsonlParts", "Parts",
           "read_rows", "run_rows", "run_corpus", "predict_corpus", "predict_line", "result_line", "claim",
           "record_settings", "source_fingerprint", "record_path", "parts_dir", "manifest_order"]
