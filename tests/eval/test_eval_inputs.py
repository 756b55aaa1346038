"""`avfusion eval` on inputs that cannot all be used: a repeated id is refused as validate refuses
it (one line naming both lines), and --skip-bad leaves out and lists every unusable row (a
repeated id, a missing file, a FIFO, a device, a folder) with its reason."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from avfusion.cli import main
from avfusion.models.pretrained import save_pretrained
from avfusion.models.registry import create_model

from helpers.avclips import make_dataset, write_labels

ARGS = ["--clips", "1", "--crops", "1", "--task", "single"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("eval_inputs")
    make_dataset(root / "clips", 1, seed=5)  # clip_{c}_0.mp4, c = 0..3
    model = create_model("zorro_vit_tiny", num_classes=4, class_names=["c0", "c1", "c2", "c3"], task="single")
    os.mkfifo(root / "fifo.mp4")
    (root / "folder.mp4").mkdir()
    return {"root": root, "labels": write_labels(root / "labels.csv"), "model": save_pretrained(model, root / "model")}


def _manifest(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "labels"])
        w.writerows(rows)
    return path


def _eval(setup, manifest: Path, out: Path, *extra: str) -> int:
    return main(["eval", "--data", str(manifest), "--labels", str(setup["labels"]), "--model", str(setup["model"]),
                 "--out", str(out), *ARGS, *extra])


def test_a_repeated_id_is_refused_naming_both_lines(setup, tmp_path, capsys):
    clips = setup["root"] / "clips"
    m = _manifest(tmp_path / "dup.csv", [("a", f"{clips}/clip_0_0.mp4", "c0"), ("b", f"{clips}/clip_1_0.mp4", "c1"),
                                         ("a", f"{clips}/clip_2_0.mp4", "c2"), ("c", f"{clips}/clip_3_0.mp4", "c3")])
    assert _eval(setup, m, tmp_path / "e1") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "id 'a' on line 4: duplicate id (first on line 2)" in line
    # --skip-bad: the first row is evaluated, the repeat listed
    assert _eval(setup, m, tmp_path / "e2", "--skip-bad") == 0
    report = json.loads((tmp_path / "e2" / "eval.json").read_text())
    assert report["conditions"]["audio+video"]["num_videos"] == 3
    assert report["inputs"]["skipped"] == [{"id": "a", "error": "row 'a' (line 4): duplicate id (first on line 2)"}]


def test_skip_bad_leaves_out_and_lists_every_unusable_row(setup, tmp_path, capsys):
    root = setup["root"]
    clips = root / "clips"
    m = _manifest(tmp_path / "bad.csv", [
        ("a", f"{clips}/clip_0_0.mp4", "c0"), ("gone", f"{root}/missing.mp4", "c1"),
        ("fifo", f"{root}/fifo.mp4", "c2"), ("dev", "/dev/null", "c2"), ("dir", f"{root}/folder.mp4", "c3"),
        ("b", f"{clips}/clip_1_0.mp4", "c1")])
    assert _eval(setup, m, tmp_path / "e1") == 2  # without --skip-bad: one line naming the first
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "row 'gone' (line 3): file not found" in line and "--skip-bad" in line
    assert _eval(setup, m, tmp_path / "e2", "--skip-bad", "--workers", "2") == 0
    report = json.loads((tmp_path / "e2" / "eval.json").read_text())
    assert report["conditions"]["audio+video"]["num_videos"] == 2
    reasons = {s["id"]: s["error"] for s in report["inputs"]["skipped"]}
    assert reasons.keys() == {"gone", "fifo", "dev", "dir"}
    assert "file not found" in reasons["gone"]
    assert "not a regular file: a FIFO" in reasons["fifo"]
    assert "not a regular file: a device" in reasons["dev"]
    assert "not a regular file: a folder" in reasons["dir"]
    assert "skipped 4 file(s)" in capsys.readouterr().out
