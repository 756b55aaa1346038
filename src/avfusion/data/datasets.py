"""Map-style dataset decoding media files directly, and the batch collate.

Missing modalities in a batch (docs/data.md): every sample carries ``has_video`` / ``has_audio``.
``collate`` stacks present tensors and fills an absent modality's slot with zeros, which the
flags (bool tensors (B,)) mark absent; when no sample of the batch has a modality, its key is
left out entirely (the model contract's "missing key = absent"). Models must not be fed the
zero slots as content: use :func:`split_by_presence` to run each group of samples with only the
keys it really has.
"""

from __future__ import annotations

import os
from typing import Any, Collection, Iterator, Sequence

import torch
from torch.utils.data import Dataset

from avfusion.data.clips import ClipConfig, ClipProcessor, FileSegment
from avfusion.data.decode import DecodeError
from avfusion.data.manifest import LabelMap, Row, UnknownLabel, read_manifest, split_missing
from avfusion.data.shards import SHARD_META, ShardDataset, ShardSamples, shard_index, stream_facts
from avfusion.data.sources import PREPARE_NAME, Source, resolve
from avfusion.errors import ConfigError, InputError, SampleError


ON_ERROR = ("raise", "mark")


class VideoDataset(Dataset):
    """Decodes each manifest row's file on access (PyAV), one sample per row.

    ``train=True``: one random clip, augmented (random draws: see ``seed``). ``train=False``: ``eval_clips`` x ``eval_crops``
    views stacked on a leading view axis. Rows whose file is missing raise at construction
    (``missing="error"``) or are left out and listed in ``self.missing`` (``missing="skip"``).

    A row that cannot be used (the file cannot be opened, its labels are unknown, and, with
    ``damaged="error"``, a truncated or damaged stream under the clip) raises :class:`SampleError`
    naming the row (``on_error="raise"``), or comes back as a marker ``{"id", "line", "error"}``
    (``on_error="mark"``) that :func:`collate` moves to ``batch["errors"]``, so the main process
    (not a loader worker) decides: stop with that one line, or count and report a skip.
    ``damaged="report"`` (evaluation) keeps a damaged clip and lists the damage in
    ``sample["damage"]``.
    """

    def __init__(self, rows: Sequence[Row], labels: LabelMap | None, cfg: ClipConfig, train: bool,
                 missing: str = "error", seed: int | None = None, threads: int = 0,
                 on_error: str = "raise", damaged: str = "error") -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if damaged not in ("error", "report"):
            raise ValueError(f"damaged must be 'error' or 'report', got {damaged!r}")
        self.on_error, self.damaged = on_error, damaged
        if missing not in ("error", "skip", "mark"):
            raise ValueError(f"missing must be 'error', 'skip' or 'mark', got {missing!r}")
        # "mark": a missing file is a row like any other that cannot be used (on_error decides)
        present, self.missing = (list(rows), []) if missing == "mark" else split_missing(rows)
        if self.missing and missing == "error":
            names = ", ".join(f"{r.id} ({r.path})" for r in self.missing[:5])
            raise FileNotFoundError(f"{len(self.missing)} manifest row(s) have no file: {names}"
                                    + (" ..." if len(self.missing) > 5 else ""))
        self.rows = present
        self.labels, self.cfg, self.train = labels, cfg, train
        self.proc = ClipProcessor(cfg, train)
        self.seed, self.threads, self.epoch = seed, threads, 0

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        # Training draws: from the global torch RNG when seed is None (the train loop seeds it per
        # (seed, epoch, index): avfusion.train.loop.SeededSamples), else from (seed, epoch, index).
        # Evaluation views are fixed.
        g = None
        if self.train and self.seed is not None:
            g = torch.Generator().manual_seed(hash((self.seed, self.epoch, i)) & 0x7FFFFFFF)
        try:
            if self.labels is not None:  # None: unlabelled use (contrastive pre-training, prediction)
                label = self.labels.encode(row.labels)
            seg = FileSegment(row.path, row.start, row.end, self.cfg, self.threads)
            sample = self.proc(seg, g)
            if sample["damage"] and (self.damaged == "error" or not (sample["has_video"] or sample["has_audio"])):
                raise DecodeError("; ".join(sample["damage"]))
        except (InputError, UnknownLabel) as e:
            where = f"row {row.id!r}" + (f" (line {row.line})" if row.line else "")
            msg = f"{where}: {str(e).replace(f'{row.path}: ', '')} [{row.path}]"
            if self.on_error == "mark":
                return {"id": row.id, "line": row.line, "error": msg}
            raise SampleError(msg) from e
        if self.labels is not None:
            sample["label"] = label
        sample["id"] = row.id
        return sample


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch; absent modalities become zeros marked by the flags. Error
    markers (``VideoDataset(on_error="mark")``) are left out and listed in ``batch["errors"]``
    as (id, message)."""
    if not samples:
        raise ValueError("collate: empty batch")
    errors = [(s["id"], s["error"]) for s in samples if "error" in s]
    samples = [s for s in samples if "error" not in s]
    if not samples:  # every sample failed: the batch is only its errors
        return {"id": [], "errors": errors}
    batch: dict[str, Any] = {"id": [s["id"] for s in samples]}
    if errors:
        batch["errors"] = errors
    for key in ("damage", "notes", "video_padded", "audio_padded", "video_requested", "audio_requested"):  # what decoding found, per sample
        if any(key in s for s in samples):
            batch[key] = [s.get(key) for s in samples]
    for mod in ("video", "audio"):
        flag = torch.tensor([bool(s.get(f"has_{mod}", mod in s)) for s in samples])
        batch[f"has_{mod}"] = flag
        if not flag.any():
            continue
        ref = next(s[mod] for s in samples if s.get(f"has_{mod}", mod in s))
        batch[mod] = torch.stack([s[mod] if f else torch.zeros_like(ref) for s, f in zip(samples, flag.tolist())])
    labels = [s["label"] for s in samples if "label" in s]
    if not labels:
        pass
    elif len(labels) != len(samples):
        raise ValueError("collate: some samples have a label and some do not")
    elif isinstance(labels[0], dict):
        batch["label"] = {k: torch.tensor([lab[k] for lab in labels]) for k in labels[0]}
    elif torch.is_tensor(labels[0]):
        batch["label"] = torch.stack(labels)
    else:
        batch["label"] = torch.tensor(labels)
    if "mix_weight" in samples[0]:
        batch["mix_weight"] = torch.tensor([s["mix_weight"] for s in samples])
    return batch


def split_by_presence(batch: dict[str, Any]) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
    """Yield (indices, sub-batch) per presence pattern; each sub-batch has only its real
    modalities as keys, so a model's missing-modality path is used honestly."""
    n = next(len(batch[m]) for m in ("video", "audio") if batch.get(m) is not None)
    # Without flags a modality counts as present exactly when its key is in the batch.
    hv = batch.get("has_video", torch.full((n,), batch.get("video") is not None, dtype=torch.bool))
    ha = batch.get("has_audio", torch.full((n,), batch.get("audio") is not None, dtype=torch.bool))
    if batch.get("video") is None:
        hv = torch.zeros(n, dtype=torch.bool)
    if batch.get("audio") is None:
        ha = torch.zeros(n, dtype=torch.bool)
    if not (hv | ha).all():
        raise ValueError("a sample in the batch has neither audio nor video")
    for v, a in ((True, True), (True, False), (False, True)):
        idx = torch.nonzero((hv.cpu() == v) & (ha.cpu() == a)).flatten()
        if len(idx) == 0:
            continue
        sub: dict[str, Any] = {"id": [batch["id"][i] for i in idx.tolist()]} if "id" in batch else {}
        if v:
            sub["video"] = batch["video"][idx]
        if a:
            sub["audio"] = batch["audio"][idx]
        lab = batch.get("label")
        if isinstance(lab, dict):
            sub["label"] = {k: t[idx] for k, t in lab.items()}
        elif lab is not None:
            sub["label"] = lab[idx]
        yield idx, sub


def worker_init(worker_id: int) -> None:  # pragma: no cover - trivial
    """Use one decoding thread per loader worker (workers already give the parallelism)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


def open_source(spec: str | Source, labels_path: str | None = None,
                allow_partial: bool = False) -> tuple[Source, str | None, list[Row] | None]:
    """(the source, the label map to use, its rows when they can be known without streaming it: a
    manifest's, or local shards' from their JSON members; None for streamed shards). A shard
    folder's labels.csv is the label map when none is given. ``allow_partial``: see
    :func:`avfusion.data.sources.resolve`."""
    src = spec if isinstance(spec, Source) else resolve(spec, allow_partial)
    labels_path = labels_path or (str(src.labels) if src.labels is not None else None)
    if not src.is_shards:
        assert src.manifest is not None
        return src, labels_path, read_manifest(src.manifest)
    return src, labels_path, shard_index(src)[1] if src.local else None


def streamed(src: Source, read: str = "auto") -> bool:
    """Whether :func:`dataset_for` streams ``src`` (shards that are not all local files, or
    ``read="stream"``) rather than reading it by random access or from a manifest."""
    return src.is_shards and not (read == "random" or (read == "auto" and src.local))


def dataset_for(src: Source, rows: Sequence[Row] | None, labels: LabelMap | None, cfg: ClipConfig, train: bool,
                on_error: str = "raise", damaged: str = "error", missing: str = "error", read: str = "auto",
                epoch_samples: int | None = None, batch_size: int | None = None, seed: int = 0,
                shuffle: int = 0, exclude: Collection[str] = (), cache: bool = False) -> Dataset:
    """The dataset that reads a source: a manifest's files (:class:`VideoDataset`), local shards by
    random access (:class:`ShardSamples`, ``read="auto"`` or ``"random"``), or shards streamed
    (:class:`ShardDataset`: any URL, or ``read="stream"``; training needs ``epoch_samples``, by
    default what the shards say (:func:`~avfusion.data.shards.stream_facts`)).
    ``cache`` keeps random-access shard samples decoded in memory (:class:`ShardSamples`)."""
    if read not in ("auto", "random", "stream"):
        raise ConfigError(f"data.read_shards must be auto, random or stream, got {read!r}")
    if cache and not (src.is_shards and read != "stream" and src.local):
        raise ConfigError(f"{src.spec}: data.cache_decoded works on local shards read by random access: "
                          "prepare the manifest into shards first")
    if not src.is_shards:
        keep = [r for r in rows or [] if r.id not in exclude] if exclude else list(rows or [])
        return VideoDataset(keep, labels, cfg, train, missing=missing, on_error=on_error, damaged=damaged)
    if not streamed(src, read):
        return ShardSamples(src, labels, cfg, train, on_error=on_error, exclude=exclude, cache=cache)
    if train and epoch_samples is None:
        epoch_samples = stream_facts(src).samples
    if train and epoch_samples is None:
        raise ConfigError(f"{src.spec}: streaming shards for training needs the epoch length, which these shards do "
                          f"not say (no {PREPARE_NAME} beside them, and not every shard has a {SHARD_META} member): set "
                          f"data.epoch_samples (the \"ok\" count of their {PREPARE_NAME})")
    return ShardDataset(src, labels, cfg, train, shuffle=shuffle if train else 0, seed=seed,
                        epoch_samples=epoch_samples if train else None, batch_size=batch_size if train else None,
                        on_error=on_error, exclude=exclude)


def rows_of(dataset: Dataset) -> list[Row] | None:
    """The rows (id, labels) behind a map-style dataset; None for a stream."""
    return list(dataset.rows) if isinstance(dataset, (VideoDataset, ShardSamples)) else None
