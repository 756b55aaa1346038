"""Embeddings of every row of a corpus (``avfusion embed``): one (N, D) float32 array per output
the model exposes in ``ModelOutput.features``, each row's clips averaged.

What the outputs are, per family (``features`` of DESIGN.md section 1):

- Zorro (``masked``, ``swin``, ``hip``): ``audio``, ``video``, ``fusion``, ``global``: the readout
  queries after the readout block and its LayerNorm, i.e. what each classifier head reads
  (``fusion`` is absent for a model without fusion tokens). Under Zorro routing ``audio`` and
  ``video`` are modality-pure: a row without video has the very ``audio`` embedding it has with it.
- MBT and the other stream schemes (``streams``): ``audio`` and ``video``: each modality's CLS
  token after the final LayerNorm (what the shared head reads; the model's logits are the mean of
  the two heads). A unimodal model has its one modality.

An output a row does not have (``audio`` of a file without an audio stream) is NaN in that row.

The file (``np.load(out)``): ``ids`` (N,) the rows embedded, in source order; one array per output
name; ``failed_ids`` / ``failed_reasons`` (F,) the rows that could not be used and why; ``meta``
a JSON string (model, source, settings, output widths). Resume and torchrun: avfusion.infer.corpus;
the parts are ``OUT.parts/chunk-RRR-NNNNNN.npz``, ``--chunk-size`` rows each, each written to a
temporary file and renamed. The merge holds one output's (N, D) array in memory at a time.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from avfusion.data.sources import Source
from avfusion.infer.corpus import CorpusJob, CorpusSummary, RowResult, record_settings, run_corpus
from avfusion.infer.fast import unwrap
from avfusion.utils.distributed import DistInfo
from avfusion.utils.files import atomic_file

CHUNK_PATTERN = "chunk-*.npz"


@torch.no_grad()
def feature_dims(model: torch.nn.Module) -> dict[str, int]:
    """Output name -> width D of ``ModelOutput.features``, from one forward pass on random inputs
    with every modality the model takes (so every output is there); a prepared model's eager one
    answers (the widths do not depend on precision, and a compiled model is not compiled twice)."""
    model = unwrap(model)
    model.eval()
    out = model(model.example_inputs(1))
    return {name: int(v.shape[-1]) for name, v in out.features.items()}


def _strings(values: Sequence[str]) -> np.ndarray:
    return np.array(list(values), dtype=np.str_) if values else np.zeros(0, dtype="<U1")


class NpzParts:
    """Embed's parts: chunks of ``chunk_size`` rows (results and failures), each written to a
    temporary file and renamed, so a chunk is there whole or not at all."""

    def __init__(self, folder: Path, rank: int, dims: dict[str, int], chunk_size: int) -> None:
        self.folder, self.rank, self.dims, self.chunk_size = folder, rank, dims, chunk_size
        self.buffer: list[RowResult] = []
        mine = [int(p.stem.rsplit("-", 1)[1]) for p in folder.glob(f"chunk-{rank:03d}-*.npz")]
        self.seq = max(mine, default=-1) + 1  # after this rank's chunks of an earlier run

    def _chunks(self) -> list[Path]:
        return sorted(self.folder.glob(CHUNK_PATTERN))

    def done(self) -> set[str]:
        ids: set[str] = set()
        for path in self._chunks():
            with np.load(path) as z:
                ids.update(z["ids"].tolist())
                ids.update(z["failed_ids"].tolist())
        return ids

    def add(self, result: RowResult) -> None:
        self.buffer.append(result)
        if len(self.buffer) >= self.chunk_size:
            self._write()

    def close(self) -> None:
        if self.buffer:
            self._write()

    def _write(self) -> None:
        ok = [r for r in self.buffer if r.error is None]
        failed = [r for r in self.buffer if r.error is not None]
        arrays: dict[str, np.ndarray] = {
            "ids": _strings([r.id for r in ok]), "order": _strings([r.order for r in ok]),
            "failed_ids": _strings([r.id for r in failed]), "failed_order": _strings([r.order for r in failed]),
            "failed_reasons": _strings([r.error or "" for r in failed]),
        }
        for name, dim in self.dims.items():
            x = np.full((len(ok), dim), np.nan, dtype=np.float32)  # (n, D); NaN: the row has no such output
            for i, r in enumerate(ok):
                if name in r.features:
                    x[i] = r.features[name].numpy()
            arrays[f"out_{name}"] = x
        with atomic_file(self.folder / f"chunk-{self.rank:03d}-{self.seq:06d}.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        self.seq += 1
        self.buffer = []

    def merge(self, out: Path, static: Sequence[RowResult], record: dict[str, Any]) -> tuple[int, int]:
        chunks = self._chunks()
        ok: list[tuple[str, str, int, int]] = []  # (order, id, chunk, row in chunk)
        failed: list[tuple[str, str, str]] = [(r.order, r.id, r.error or "") for r in static]
        for c, path in enumerate(chunks):
            with np.load(path) as z:
                ok += [(o, i, c, j) for j, (o, i) in enumerate(zip(z["order"].tolist(), z["ids"].tolist()))]
                failed += list(zip(z["failed_order"].tolist(), z["failed_ids"].tolist(),
                                   z["failed_reasons"].tolist()))
        ok.sort()
        seen: set[str] = set()
        rows = []
        for entry in ok:  # each id once (first in source order)
            if entry[1] not in seen:
                seen.add(entry[1])
                rows.append(entry)
        failed = sorted(set(failed))
        # chunk -> (positions in OUT, rows in the chunk)
        where: dict[int, tuple[list[int], list[int]]] = {}
        for k, (_, _, c, j) in enumerate(rows):
            pos, idx = where.setdefault(c, ([], []))
            pos.append(k)
            idx.append(j)
        meta = {**record, "outputs": self.dims}
        # Written member by member: one output's (N, D) array in memory at a time.
        with atomic_file(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            _member(zf, "ids", _strings([r[1] for r in rows]))
            for name, dim in self.dims.items():
                x = np.empty((len(rows), dim), dtype=np.float32)  # (N, D)
                for c, (pos, idx) in where.items():
                    with np.load(chunks[c]) as z:
                        x[pos] = z[f"out_{name}"][idx]
                _member(zf, name, x)
            _member(zf, "failed_ids", _strings([f[1] for f in failed]))
            _member(zf, "failed_reasons", _strings([f[2] for f in failed]))
            _member(zf, "meta", np.array(json.dumps(meta)))
        return len(rows) + len(failed), len(failed)


def _member(zf: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array(f, array, allow_pickle=False)


def embed_corpus(model: torch.nn.Module, source: str | os.PathLike | Source, out: str | os.PathLike,
                 clips: int = 4, batch_size: int = 8, workers: int = 0, chunk_size: int = 256,
                 info: DistInfo = DistInfo(), progress: bool = False) -> CorpusSummary:
    """Embeddings of every row of ``source`` into ``out`` (an .npz; see the module docstring);
    resumable and torchrun-aware (avfusion.infer.corpus)."""
    dims = feature_dims(model)
    job = CorpusJob({"command": "embed", "clips": clips, **record_settings(model)},
                    lambda folder, rank: NpzParts(folder, rank, dims, chunk_size), clips=clips, batch_size=batch_size,
                    workers=workers)
    return run_corpus(model, source, out, job, info, progress)


__all__ = ["embed_corpus", "feature_dims", "NpzParts"]
