"""A streamed source that fails mid-run (a `pipe:` command that exits non-zero, a tar cut off in
the middle) stops train, eval, predict --data and embed promptly, with and without loader
workers: one line naming the shard, exit status 2, and the program exits (loader workers ignore
SIGTERM during training, so a worker left running after an error used to keep the process alive
forever)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avfusion.data.clips import ClipConfig
from avfusion.data.manifest import LabelMap, read_manifest
from avfusion.data.prepare import write_shards
from avfusion.models.pretrained import save_pretrained
from avfusion.models.registry import create_model

from helpers.avclips import make_dataset, write_labels

# Slow tier (make test-all): every command x workers against failing streams, in subprocesses.
pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
    [str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")])}

# Every command with 0 and 2 loader workers, in one interpreter: its exit (where leftover workers
# used to be joined forever) is what the subprocess timeout guards.
SCRIPT = r"""
import contextlib, io, json, sys, time
from avfusion.cli import main
labels, model, out = sys.argv[1:4]
runs = {}
for failing, src in json.loads(sys.argv[4]).items():
  o = f"{out}/{failing}"
  runs[failing] = {
    "train": ["train", "--train", src, "--labels", labels, "--out", o + "/train", "--model", "zorro_vit_tiny",
              "--batch-size", "2", "--max-steps", "2", "data.epoch_samples=8", "data.task=single",
              "run.progress=false", "run.tensorboard=false"],
    "eval": ["eval", "--data", src, "--labels", labels, "--task", "single", "--model", model, "--out", o + "/eval",
             "--clips", "1", "--crops", "1"],
    "predict": ["predict", "--data", src, "--model", model, "--out", o + "/p.jsonl", "--clips", "1", "--no-progress"],
    "embed": ["embed", "--data", src, "--model", model, "--out", o + "/e.npz", "--clips", "1"],
}
got = {}
# training with workers last: its workers are what used to outlive the program
order = [(f, w, n) for w in ("0", "2") for f in runs for n in runs[f] if (n, w) != ("train", "2")]
for failing, workers, name in order + [(f, "2", "train") for f in runs]:
        argv = runs[failing][name]
        err = io.StringIO()
        t = time.time()
        with contextlib.redirect_stderr(err):
            rc = main([*argv, "--workers", workers])
        lines = [l for l in err.getvalue().splitlines() if l.startswith("avfusion ")]
        got[f"{failing} {name} {workers}"] = [rc, lines, round(time.time() - t, 1)]
print(json.dumps(got))
"""


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("streamfail")
    manifest = make_dataset(root / "clips", 1, seed=3)  # 4 clips
    labels = write_labels(root / "labels.csv")
    model = create_model("zorro_vit_tiny", num_classes=4, class_names=["c0", "c1", "c2", "c3"], task="single")
    model_dir = save_pretrained(model, root / "model")
    cfg = ClipConfig.from_model(model.cfg)
    res = write_shards(read_manifest(manifest), LabelMap.read(labels), cfg, root / "shards", max_count=2)
    good = res.shards[0]
    data = Path(good).read_bytes()
    (root / "cut.tar").write_bytes(data[: len(data) // 3])  # a tar cut off inside a member
    return {"root": root, "labels": labels, "model": model_dir, "good": good}


def test_a_failing_stream_stops_every_command_promptly_with_one_line(stream, tmp_path):
    root = stream["root"]
    bad = {"missing": f"{root}/missing.tar", "cut": f"{root}/cut.tar"}
    # the good shard first: the failure comes mid-stream (with 2 workers, in the second worker)
    sources = {k: f"pipe:cat {{{stream['good']},{b}}}" for k, b in bad.items()}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(stream["labels"]), str(stream["model"]), str(tmp_path),
                           json.dumps(sources)], env=ENV, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(got) == 16
    for run, (rc, lines, _) in got.items():
        failing = run.split()[0]
        why = "the command exited with status 1" if failing == "missing" else "not a readable tar"
        assert rc == 2, (run, lines)
        assert len(lines) == 1 and "error:" in lines[0], (run, lines)
        # the original error's message, never a worker's traceback
        assert "Traceback" not in lines[0] and "DataLoader worker" not in lines[0], (run, lines)
        assert bad[failing] in lines[0] and why in lines[0], (run, lines)
