"""``avfusion prepare``: a manifest decoded once into WebDataset shards, in parallel, in parts,
resumable.

Shard ``i`` holds manifest rows ``[i * S, (i + 1) * S)`` (``S`` = ``max_count``) minus the rows
that fail, so what a shard holds depends only on the manifest and ``S``, never on how many
processes or machines wrote it:

- ``workers=N`` processes write different shards at once: the same samples whatever N;
- ``part=(K, N)`` writes only shards ``i`` with ``i % N == K``: N jobs of a scheduler (a SLURM
  array, a Kubernetes Job) prepare disjoint parts of one corpus into one folder, shard names
  unique by construction;
- a shard is written to ``shard-NNNNNN.tar.tmp``, fsynced and renamed, then recorded in
  ``.done/shard-NNNNNN.json`` (its counts and failures): a rerun after a kill skips every shard
  recorded there and redoes the rest;
- ``prepare.json`` merges every recorded shard (all parts): ``"shard_samples"`` each shard's
  sample count, ``"complete"`` whether every shard of the manifest is done. A folder prepared
  with other settings is refused;
- every shard starts with a ``__meta__`` member (avfusion.data.shards): the task, label map,
  clip settings and counts a streamed reader needs, since no ``prepare.json`` travels with a URL.

Duplicate ids are decided from the whole manifest before any work (the first occurrence is
written, the others fail with validate's reason), so every part agrees.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import tarfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import webdataset as wds

from avfusion.core.config import PreprocessConfig
from avfusion.data.clips import ClipConfig
from avfusion.data.manifest import LabelMap, Row, RowProblem
from avfusion.data.shards import SHARD_META, encode_row
from avfusion.data.sources import DONE_DIR, LABELS_NAME, PREPARE_NAME
from avfusion.data.validate import duplicate_ids
from avfusion.errors import ConfigError, InputError
from avfusion.tasks import task_of
from avfusion.utils.dataclass_config import to_plain
from avfusion.utils.files import atomic_json
from avfusion.utils.lock import hold_folder
from avfusion.utils.progress import Progress, progress_bar

SHARD_NAME = "shard-{:06d}.tar"


@dataclass
class PrepareResult:
    ok: int = 0
    failed: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    done: int = 0  # shards recorded as finished (all parts)
    total: int = 0  # shards the manifest makes
    skipped: int = 0  # shards this run found finished and did not redo

    @property
    def complete(self) -> bool:
        return self.done == self.total

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "failed": self.failed, "failures": self.failures, "shards": self.shards,
                "shards_done": self.done, "shards_total": self.total, "complete": self.complete}


@dataclass
class _Job:
    """One shard to write: which rows, and which of them are known to fail already."""

    index: int
    start: int  # manifest index of its first row
    rows: list[Row]
    refused: dict[int, str]  # position in ``rows`` -> reason (duplicate ids)
    meta: dict[str, Any]  # its __meta__ member, less the sample count


def parse_part(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 0 <= K < N."""
    k, sep, n = text.partition("/")
    try:
        part = int(k), int(n)
    except ValueError:
        part = (-1, 0)
    if not sep or not 0 <= part[0] < part[1]:
        raise ConfigError(f"--part {text!r}: expected K/N with 0 <= K < N, e.g. 0/8")
    return part


def write_shards(
    rows: Sequence[Row],
    labels: LabelMap,
    cfg: ClipConfig,
    out_dir: str | os.PathLike,
    max_count: int = 256,
    video_format: str = "h264",
    bad_lines: Sequence[RowProblem] = (),
    workers: int = 1,
    part: tuple[int, int] = (0, 1),
    progress: bool = False,
) -> PrepareResult:
    """Write ``out_dir/shard-NNNNNN.tar`` (see the module docstring); each failing row and each
    malformed manifest line (``bad_lines``) is recorded with its reason, never fatal. A second
    run of the same part (of the whole manifest: ``OUT/.lock``; of part K/N:
    ``OUT/.done/part-K-of-N/.lock``) is refused while one runs, naming it (a RunError)."""
    if max_count < 1 or workers < 1:
        raise ConfigError(f"shard size and workers must be >= 1, got {max_count} and {workers}")
    out = Path(out_dir)
    k, n = part
    # Parts of one corpus run side by side (their shards are disjoint); the same part twice would
    # write the same shards at once.
    where = (out, str(out)) if n == 1 else (out / DONE_DIR / f"part-{k}-of-{n}", f"{out} (part {k}/{n})")
    with hold_folder(*where):
        return _write_shards(rows, labels, cfg, out, max_count, video_format, bad_lines, workers, part, progress)


def _write_shards(rows: Sequence[Row], labels: LabelMap, cfg: ClipConfig, out: Path, max_count: int,
                  video_format: str, bad_lines: Sequence[RowProblem], workers: int, part: tuple[int, int],
                  progress: bool) -> PrepareResult:
    done_dir = out / DONE_DIR
    done_dir.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    _check_settings(done_dir, {"rows": len(rows), "shard_size": max_count, "video_format": video_format,
                               "ids": _fingerprint(rows), "clips": to_plain(cfg), "labels": labels.names})
    atomic_json(done_dir / "manifest.json", {"failures": [_failure(b.id, b.line, b.path, b.reason) for b in bad_lines]})
    labels.write(out / LABELS_NAME)

    refused = duplicate_ids(rows)  # validate's check, in its words
    total = (len(rows) + max_count - 1) // max_count
    k, n = part
    todo = [i for i in range(total) if i % n == k and not _finished(out, i)]
    skipped = sum(1 for i in range(total) if i % n == k) - len(todo)
    corpus = {"format": 1, "task": task_of(bool(labels.heads), (len(r.labels) for r in rows)),
              "labels": {"sha1": labels.digest(), "classes": labels.num_classes}, "clips": to_plain(cfg),
              "video_format": video_format, "shard_size": max_count, "shards_total": total, "rows": len(rows)}
    jobs = [_Job(i, i * max_count, rows[i * max_count:(i + 1) * max_count],
                 {j - i * max_count: r for j, r in refused.items() if i * max_count <= j < (i + 1) * max_count},
                 {**corpus, "shard": i})
            for i in todo]
    _run(jobs, labels, cfg, out, video_format, workers, progress)
    res = merge(out, total)
    res.skipped = skipped
    return res


def _finished(out: Path, index: int) -> bool:
    """Shard ``index`` is recorded as done and, if it holds samples, its tar is there (a shard
    deleted since is written again)."""
    record = out / DONE_DIR / f"shard-{index:06d}.json"
    if not record.is_file():
        return False
    name = json.loads(record.read_text()).get("shard")
    return name is None or (out / name).is_file()


def _fingerprint(rows: Sequence[Row]) -> str:
    import hashlib

    h = hashlib.sha1()
    for r in rows:
        h.update(f"{r.id}\0{r.path}\0{r.start}\0{r.end}\0{';'.join(r.labels)}\n".encode())
    return h.hexdigest()


def _check_settings(done_dir: Path, settings: dict[str, Any]) -> None:
    """A folder keeps the settings it was started with: resuming (or adding a part) with another
    manifest, shard size or preprocessing would mix incompatible shards."""
    path = done_dir / "settings.json"
    if path.is_file():
        saved = _as_written_now(json.loads(path.read_text()))
        diff = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if diff:
            raise ConfigError(f"{done_dir.parent} was prepared from another manifest or with other settings "
                              f"({', '.join(diff)} differ): use a new --out, or the same command to resume")
        return
    atomic_json(path, settings)


def _as_written_now(settings: dict[str, Any]) -> dict[str, Any]:
    """Saved settings as this version writes them: the clips' preprocessing through
    PreprocessConfig (a folder started when audio_mean / audio_std were always stored has them
    as numbers where they are now null, the preset's)."""
    clips = settings.get("clips")
    if isinstance(clips, dict) and "modalities" not in clips:  # written before ClipConfig.modalities
        clips["modalities"] = to_plain(ClipConfig().modalities)
    pre = clips.get("preprocess") if isinstance(clips, dict) else None
    if isinstance(pre, dict):
        try:
            settings["clips"]["preprocess"] = to_plain(PreprocessConfig(**pre))
        except (TypeError, ConfigError):
            pass  # not a config this version reads: compared as stored, so it differs
    return settings


def _failure(rid: str, line: int, path: str, reason: str) -> dict[str, Any]:
    return {"id": rid, "line": line, "path": path, "reason": reason}


_progress_queue: Any = None  # set in each worker process: where it reports finished rows


def _init_worker(queue: Any) -> None:
    global _progress_queue
    _progress_queue = queue
    import torch

    torch.set_num_threads(1)  # the processes are the parallelism


def write_one_shard(job: _Job, labels: LabelMap, cfg: ClipConfig, out: Path, video_format: str) -> dict[str, Any]:
    """Write shard ``job.index`` (tmp, fsync, rename), then record it in ``.done``; returns the record."""
    name = SHARD_NAME.format(job.index)
    tmp = out / f"{name}.tmp"
    ok, failures, ids = 0, [], []
    with open(tmp, "w+b") as stream:
        # __meta__ goes first, so that a stream can stop after it; its sample count is known at the
        # end, so its slot is sized for the most it can be (every row) and filled in then.
        slot = _meta_slot(stream, {**job.meta, "samples": len(job.rows)})
        with wds.TarWriter(stream) as sink:
            for j, row in enumerate(job.rows):
                try:
                    if j in job.refused:
                        raise InputError(job.refused[j])
                    sample = encode_row(row, labels, cfg, video_format)
                except Exception as e:  # noqa: BLE001 - one bad file never stops the run; it is reported,
                    # a bug with its exception type, so it shows up in the summary, not as a crash mid-run.
                    reason = str(e) if isinstance(e, InputError) else f"{type(e).__name__}: {e}"
                    failures.append(_failure(row.id, row.line, row.path, reason))
                else:
                    sample["__key__"] = f"{job.start + j:09d}"  # the row's place in the manifest: unique
                    sink.write(sample)
                    ok += 1
                    ids.append(row.id)
                if _progress_queue is not None:
                    _progress_queue.put(1)
        _fill_meta(stream, slot, {**job.meta, "samples": ok})
        stream.flush()
        os.fsync(stream.fileno())
    if ok:
        os.replace(tmp, out / name)
    else:
        tmp.unlink()
    record = {"shard": name if ok else None, "ok": ok, "failed": len(failures), "failures": failures, "ids": ids}
    atomic_json(out / DONE_DIR / f"shard-{job.index:06d}.json", record)
    return record


def _meta_slot(stream: Any, meta: dict[str, Any]) -> int:
    """Write the ``__meta__`` member (a tar header, then ``meta`` as JSON) at the start of
    ``stream``; returns its data's size, which :func:`_fill_meta` keeps."""
    data = json.dumps(meta).encode()
    info = tarfile.TarInfo(SHARD_META)
    info.size, info.mode, info.mtime = len(data), 0o444, int(time.time())
    header = info.tobuf(format=tarfile.USTAR_FORMAT)  # one 512-byte block: the data starts there
    stream.write(header + data + bytes(-len(data) % tarfile.BLOCKSIZE))
    return len(data)


def _fill_meta(stream: Any, size: int, meta: dict[str, Any]) -> None:
    """Rewrite the ``__meta__`` data in place, padded with spaces (still JSON) to the slot's size."""
    data = json.dumps(meta).encode()
    assert len(data) <= size, "a shard's final __meta__ outgrew its slot"
    stream.seek(tarfile.BLOCKSIZE)
    stream.write(data.ljust(size))
    stream.seek(0, os.SEEK_END)


def _run(jobs: list[_Job], labels: LabelMap, cfg: ClipConfig, out: Path, video_format: str, workers: int,
         progress: bool) -> None:
    n_rows = sum(len(j.rows) for j in jobs)
    bar = progress_bar(n_rows, "prepare", "clip", enabled=progress and n_rows > 0)
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            write_one_shard(job, labels, cfg, out, video_format)
            bar.update(len(job.rows))
    else:
        # fork: the workers start at once, with the manifest and label map already in memory.
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        ctx_queue = ctx.Queue()
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx,
                                 initializer=_init_worker, initargs=(ctx_queue,)) as pool:
            pending = {pool.submit(write_one_shard, job, labels, cfg, out, video_format) for job in jobs}
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                for f in finished:
                    f.result()  # a crash of a worker (a bug) surfaces here
                _drain(ctx_queue, bar)
            _drain(ctx_queue, bar)
    bar.close()


def _drain(queue: Any, bar: Progress) -> None:
    n = 0
    while True:
        try:
            n += queue.get_nowait()
        except Exception:  # queue.Empty
            break
    if n:
        bar.update(n)


def merge(out: Path, total: int) -> PrepareResult:
    """Merge the records of every finished shard (from all parts) into ``prepare.json``."""
    done_dir = out / DONE_DIR
    res = PrepareResult(total=total)
    counts: dict[str, int] = {}
    manifest = done_dir / "manifest.json"
    if manifest.is_file():
        res.failures += json.loads(manifest.read_text())["failures"]
    for i in range(total):
        path = done_dir / f"shard-{i:06d}.json"
        if not path.is_file():
            continue
        rec = json.loads(path.read_text())
        res.done += 1
        res.ok += rec["ok"]
        res.failures += rec["failures"]
        if rec["shard"]:
            res.shards.append(str(out / rec["shard"]))
            counts[rec["shard"]] = rec["ok"]
    res.failed = len(res.failures)
    res.failures.sort(key=lambda f: f["line"])
    settings = json.loads((done_dir / "settings.json").read_text())
    atomic_json(out / PREPARE_NAME, {**res.to_dict(), "shard_samples": counts, "shard_size": settings["shard_size"],
                                     "video_format": settings["video_format"], "clips": settings["clips"],
                                     "written": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return res


__all__ = ["PrepareResult", "write_shards", "write_one_shard", "merge", "parse_part"]
