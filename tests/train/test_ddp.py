"""Two CPU processes with torchrun (DDP over gloo): training runs, and the distributed evaluation
gathers every video exactly once, so its metrics equal a single-process evaluation."""

import json
import os
import subprocess
import sys

import pytest

from helpers.avclips import make_dataset, write_labels

# Slow tier (make test-all): two torchrun processes.
pytestmark = pytest.mark.slow


def test_torchrun_two_processes_match_single_process_eval(tmp_path):
    train = make_dataset(tmp_path / "train", 3, seed=0)
    val = make_dataset(tmp_path / "val", 2, seed=1, classes=4)
    # An odd number of validation videos: a padded distributed sampler would count one twice.
    lines = val.read_text().splitlines()
    val.write_text("\n".join(lines[:-1]) + "\n")
    labels = write_labels(tmp_path / "labels.csv")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "avfusion",
           "train", "--model", "zorro_vit_tiny", "--train", str(train), "--val", str(val), "--labels", str(labels),
           "--out", str(out), "--max-steps", "3", "--batch-size", "2", "--workers", "0",
           "run.progress=false", "run.log_every=1", "data.eval_clips=2", "data.eval_crops=1", "optim.name=adamw",
           "optim.lr=0.001"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp_report = json.loads((out / "eval.json").read_text())
    assert ddp_report["conditions"]["audio+video"]["num_videos"] == 7
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # rank 0 alone writes the log

    from avfusion.eval.evaluate import evaluate_source
    from avfusion.models.pretrained import load_pretrained

    model = load_pretrained(out)
    single = evaluate_source(model, val, labels, "single", batch_size=2, eval_clips=2, eval_crops=1)
    for cond, res in single["conditions"].items():
        ddp = ddp_report["conditions"][cond]
        assert ddp["num_videos"] == res["num_videos"]
        for output, metrics in res["outputs"].items():
            for k in ("top1", "top5", "mean_class_accuracy"):
                assert ddp["outputs"][output][k] == pytest.approx(metrics[k], abs=1e-9), (cond, output, k)
        assert ddp["predictions"]["preds"] == res["predictions"]["preds"]
