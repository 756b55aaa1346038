"""The one corpus runner (infer/corpus.py run_corpus) with a per-row hook: what predict --data,
embed and timeline manifests share (record, lock, resume, split, merge). A job's hook computes a
row's answer; the runner writes each id once, in manifest order, resumes after an interruption
without recomputing finished rows, and turns a row the hook cannot use into that row's error."""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import avfusion.infer
from avfusion.data.manifest import Row
from avfusion.errors import ConfigError, InputError
from avfusion.infer.corpus import CorpusJob, JsonlParts, parts_dir, run_corpus
from avfusion.models.registry import get_model_config


class Named(nn.Module):
    """Enough of a model for the run record (its config and weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = get_model_config("mbt_tiny", num_classes=2)
        self.w = nn.Parameter(torch.zeros(1))


@pytest.fixture
def manifest(tmp_path) -> Path:
    rows = []
    for i in range(5):
        (tmp_path / f"f{i}.bin").write_bytes(b"x" * (i + 1))
        rows.append({"id": f"r{i}", "path": str(tmp_path / f"f{i}.bin")})
    rows.insert(2, {"id": "gone", "path": str(tmp_path / "gone.bin")})
    rows.append({"id": "r1", "path": str(tmp_path / "f1.bin")})  # a repeated id
    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "path"])
        w.writeheader()
        w.writerows(rows)
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_per_row_hook_resumes_and_writes_each_id_once(manifest, tmp_path):
    calls: list[str] = []
    stop_at = {"r3"}

    def size(row: Row) -> dict:
        if row.id in stop_at:
            raise KeyboardInterrupt  # the run is cut short here
        calls.append(row.id)
        if row.id == "r4":
            raise InputError(f"{row.path}: cannot use this one")
        return {"bytes": Path(row.path).stat().st_size}

    out = tmp_path / "o.jsonl"
    job = CorpusJob({"command": "size"}, JsonlParts, per_row=size)
    with pytest.raises(KeyboardInterrupt):
        run_corpus(Named(), manifest, out, job)
    assert not out.exists() and JsonlParts(parts_dir(out), 0).done() == {"r0", "r1", "gone", "r2"}
    stop_at.clear()
    calls.clear()
    summary = run_corpus(Named(), manifest, out, job)
    assert calls == ["r3", "r4"]  # finished rows are not computed again
    assert (summary.rows, summary.errors, summary.computed, summary.resumed) == (7, 3, 2, 4)
    lines = _lines(out)
    assert [x["id"] for x in lines] == ["r0", "r1", "gone", "r2", "r3", "r4", "r1"]  # manifest order
    assert lines[0] == {"id": "r0", "path": str(tmp_path / "f0.bin"), "bytes": 1}
    assert "file not found" in lines[2]["error"] and lines[5]["error"].startswith("row 'r4' (line 7): cannot use")
    assert "duplicate id" in lines[6]["error"]
    assert not parts_dir(out).exists()


def test_a_per_row_job_needs_a_manifest(tmp_path):
    shards = tmp_path / "s.tar"
    shards.write_bytes(b"")
    job = CorpusJob({"command": "predict --timeline"}, JsonlParts, per_row=lambda row: {})
    with pytest.raises(ConfigError, match="predict --timeline needs the media files"):
        run_corpus(Named(), str(shards), tmp_path / "o.jsonl", job)


def test_infer_modules_reach_into_no_other_modules_private_names():
    """The runner's helpers were used privately by the timeline (``C._final_group`` and three more):
    every module of avfusion.infer uses other modules' public names only."""
    found = []
    for path in sorted(Path(avfusion.infer.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        modules = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and (node.module or "").startswith("avfusion") for a in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("avfusion"):
                found += [f"{path.name}: from {node.module} import {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert found == []
