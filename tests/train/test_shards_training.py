"""Training, pre-training and evaluation straight from shards: a folder, a brace pattern, a pipe:
URL; exact resume after SIGKILL (random access and streamed); DDP over uneven shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from avfusion.cli import main
from avfusion.data.clips import ClipConfig
from avfusion.data.manifest import LabelMap, read_manifest
from avfusion.data.prepare import write_shards
from avfusion.models.registry import get_model_config
from avfusion.data.shards import SHARD_META, delivered_by_worker, next_worker
from avfusion.train.checkpoint import FAULT_ENV, find_checkpoint
from helpers.avclips import make_dataset, write_labels
from helpers.runs import assert_same_weights, final_weights

MODEL = "zorro_vit_tiny"
COMMON = ["--model", MODEL, "--batch-size", "4", "--seed", "0", "run.progress=false", "run.log_every=1",
          "run.tensorboard=false", "optim.name=adamw", "optim.lr=0.001", "data.eval_clips=2", "data.eval_crops=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shardtrain")
    manifest = make_dataset(root / "clips", 3, seed=0)  # 12 clips
    labels = write_labels(root / "labels.csv")
    cfg = ClipConfig.from_model(get_model_config(MODEL))
    res = write_shards(read_manifest(manifest), LabelMap.read(labels), cfg, root / "shards", max_count=5)
    assert res.ok == 12 and len(res.shards) == 3  # uneven: 5, 5, 2 samples
    return {"root": root, "manifest": manifest, "labels": labels, "shards": root / "shards"}


def _train(out, train, *extra, workers=0):
    return main(["train", "--train", str(train), "--out", str(out), "--workers", str(workers), *COMMON, *extra])


def test_train_eval_pretrain_from_every_kind_of_shard_source(data, tmp_path, capsys):
    shards = data["shards"]
    pattern = f"{shards}/shard-{{000000..000002}}.tar"
    # a folder (its labels.csv is the label map), validated on the same shards
    assert _train(tmp_path / "folder", shards, "--val", str(shards), "--max-steps", "2") == 0
    report = json.loads((tmp_path / "folder" / "eval.json").read_text())
    assert report["conditions"]["audio+video"]["num_videos"] == 12
    # a brace pattern with a label map
    assert _train(tmp_path / "pattern", pattern, "--labels", str(data["labels"]), "--max-steps", "2") == 0
    # a pipe: URL is streamed: the epoch length and the task are given
    assert _train(tmp_path / "pipe", f"pipe:cat {pattern}", "--labels", str(data["labels"]), "--max-steps", "2",
                  "data.epoch_samples=12", "data.task=single") == 0
    capsys.readouterr()
    # evaluation: the same numbers from the files, the folder and the stream
    args = ["--model", str(tmp_path / "folder"), "--clips", "2", "--crops", "1", "--json"]
    got = {}
    for name, src in (("files", data["manifest"]), ("folder", shards), ("pipe", f"pipe:cat {pattern}")):
        assert main(["eval", "--data", str(src), "--labels", str(data["labels"]), "--task", "single",
                     "--out", str(tmp_path / f"eval_{name}"), *args]) == 0
        got[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["conditions"]["audio+video"]
    for name in ("folder", "pipe"):
        assert got[name]["num_videos"] == 12
        # shards hold re-encoded 256p frames: the same predictions within re-encoding noise
        same = [a == b for a, b in zip(got[name]["predictions"]["preds"], got["files"]["predictions"]["preds"])]
        assert got[name]["predictions"]["ids"] == got["files"]["predictions"]["ids"] and sum(same) >= 11
    # pre-training reads shards the same way (no labels needed)
    assert main(["pretrain", "--train", f"{shards}/shard-000000.tar::{shards}/shard-000002.tar", "--out", str(tmp_path / "pre"),
                 "--workers", "0", "--max-steps", "2", *COMMON[:2], "--batch-size", "4", "run.progress=false",
                 "optim.name=adamw", "optim.lr=0.001", "contrastive.proj_hidden=0", "contrastive.proj_dim=16"]) == 0


def _without_meta(shards: Path, out: Path) -> Path:
    """Copies of the shards as prepare wrote them before they carried __meta__."""
    out.mkdir()
    for path in sorted(shards.glob("*.tar")):
        with tarfile.open(path) as src, tarfile.open(out / path.name, "w") as dst:
            assert src.getmembers()[0].name == SHARD_META
            for m in src.getmembers()[1:]:
                dst.addfile(m, src.extractfile(m))
    return out


def test_streamed_shards_without_meta_need_their_epoch_length_and_task(data, tmp_path, capsys):
    old = _without_meta(data["shards"], tmp_path / "old")
    pattern = f"pipe:cat {old}/shard-{{000000..000002}}.tar"
    assert _train(tmp_path / "a", pattern, "--labels", str(data["labels"]), "--max-steps", "1",
                  "data.task=single") == 2
    assert "set data.epoch_samples" in capsys.readouterr().err
    assert _train(tmp_path / "b", pattern, "--labels", str(data["labels"]), "--max-steps", "1",
                  "data.epoch_samples=12") == 2
    assert "set data.task" in capsys.readouterr().err
    assert _train(tmp_path / "c", pattern, "--labels", str(data["labels"]), "--max-steps", "1",
                  "data.epoch_samples=12", "data.task=single") == 0


def _steps(out: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("how", ["pipe", "list"])
def test_streamed_training_takes_task_and_epoch_length_from_the_shards(data, tmp_path, how):
    """Neither data.task nor data.epoch_samples: a pipe: pattern (counts from each shard's __meta__)
    and a streamed :: list of two of the three shards (counts from the prepare.json beside them)
    train exactly as with both set."""
    shards = data["shards"]
    if how == "pipe":
        src, samples = f"pipe:cat {shards}/shard-{{000000..000002}}.tar", 12  # 3 steps an epoch
    else:
        src, samples = f"{shards}/shard-000000.tar::{shards}/shard-000002.tar", 7  # 5 + 2: 1 step an epoch
    extra = ["--labels", str(data["labels"]), "schedule.epochs=2", "data.read_shards=stream", "data.shuffle_buffer=4"]
    assert _train(tmp_path / "told", src, *extra, f"data.epoch_samples={samples}", "data.task=single") == 0
    assert _train(tmp_path / "known", src, *extra) == 0
    assert _steps(tmp_path / "known") == _steps(tmp_path / "told") == list(range(1, 2 * (samples // 4) + 1))
    assert_same_weights(final_weights(tmp_path / "told"), final_weights(tmp_path / "known"))
    if how == "pipe":  # evaluation of a stream takes the task from the shards too
        assert main(["eval", "--data", src, "--labels", str(data["labels"]), "--model", str(tmp_path / "known"),
                     "--clips", "1", "--crops", "1", "--out", str(tmp_path / "eval")]) == 0
        assert json.loads((tmp_path / "eval" / "eval.json").read_text())["task"] == "single"


def test_a_setting_the_shards_contradict_is_refused_in_one_line(data, tmp_path, capsys):
    # streamed: the prepare.json beside them counts them (a set count is checked where that is cheap)
    pattern = f"{data['shards']}/shard-{{000000..000002}}.tar"
    assert _train(tmp_path / "a", pattern, "--labels", str(data["labels"]), "--max-steps", "1",
                  "data.read_shards=stream", "data.epoch_samples=10") == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and "data.epoch_samples=10" in err[0] and "hold 12 samples" in err[0]
    # multi-label shards (a row with two labels) trained as single-label
    rows = read_manifest(data["manifest"])[:4]
    rows[1].labels = [*rows[1].labels, "c2" if rows[1].labels != ["c2"] else "c1"]
    cfg = ClipConfig.from_model(get_model_config(MODEL))
    multi = write_shards(rows, LabelMap.read(data["labels"]), cfg, tmp_path / "multi", max_count=4)
    assert multi.ok == 4
    assert _train(tmp_path / "b", f"pipe:cat {multi.shards[0]}", "--labels", str(data["labels"]), "--max-steps", "1",
                  "data.task=single") == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and "data.task=single" in err[0] and "says multilabel" in err[0]


@pytest.mark.parametrize("read,workers,features", [("random", 0, "workers"), ("stream", 2, "workers"),
                                                    ("random", 1, "device")])
@pytest.mark.slow  # slow tier: SIGKILL fault injection over shards
def test_sigkill_and_resume_from_shards_is_exact(data, tmp_path, read, workers, features):
    """A run killed mid-way and started again ends with the same weights as an uninterrupted one:
    local shards by random access (the epoch sampler), streamed with two loader workers (each
    worker skips what it had delivered), and with the feature work on the batch (its SpecAugment
    draws come from the step's generator)."""
    extra = ["--max-steps", "9", "run.save_every=1", f"data.read_shards={read}", "data.shuffle_buffer=4",
             "model_overrides={drop_path_rate: 0.1}", f"data.features_on={features}"]
    full = tmp_path / "full"
    assert _train(full, data["shards"], *extra, workers=workers) == 0
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "avfusion", "train", "--train", str(data["shards"]), "--out", str(killed),
           "--workers", str(workers), *COMMON, *extra]
    # (the same thread count as this process: float sums depend on it)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and _checkpoint_step(killed) < 4 and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step = _checkpoint_step(killed)
    assert 4 <= step < 9 and not (killed / "model.safetensors").exists(), f"killed at step {step}"
    assert _train(killed, data["shards"], *extra, workers=workers) == 0
    a, b = final_weights(full), final_weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 10))


@pytest.mark.parametrize("nth", [1, 4, 5])
def test_streamed_resume_at_every_point_of_an_epoch(data, tmp_path, nth):
    """Streamed, two loader workers, 3 batches an epoch (worker 0 yields two, worker 1 one): a run
    killed right after its nth checkpoint (steps 1 and 4: after worker 0's first batch, when worker 1
    is due next; step 5: after both) resumes to the uninterrupted run's weights. The resumed loader
    starts its turns at worker 0 again, so its workers take over the interrupted ones' parts."""
    extra = ["--max-steps", "6", "run.save_every=1", "data.read_shards=stream", "data.shuffle_buffer=4",
             "model_overrides={drop_path_rate: 0.1}"]
    full = tmp_path / "full"
    assert _train(full, data["shards"], *extra, workers=2) == 0
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "avfusion", "train", "--train", str(data["shards"]), "--out", str(killed),
           "--workers", "2", *COMMON, *extra]
    proc = subprocess.run(cmd, env={**os.environ, FAULT_ENV: f"checkpoint:done:{nth}"}, capture_output=True,
                          timeout=600)
    assert proc.returncode == -signal.SIGKILL and _checkpoint_step(killed) == nth
    assert _train(killed, data["shards"], *extra, workers=2) == 0
    assert_same_weights(final_weights(full), final_weights(killed))


def test_next_worker_follows_the_loaders_turns():
    # counts [2, 1]: batches come from workers 0, 1, 0; [3, 3, 2]: 0 1 2 0 1 2 0 1
    assert [next_worker([2, 1], k) for k in range(4)] == [0, 1, 0, 0]
    assert [next_worker([3, 3, 2], k) for k in range(8)] == [0, 1, 2, 0, 1, 2, 0, 1]
    assert delivered_by_worker([3, 3, 2], 4) == [2, 1, 1]


def _checkpoint_step(out: Path) -> int:
    try:
        return torch.load(find_checkpoint(out) / "state.pt", weights_only=True)["step"]
    except (TypeError, FileNotFoundError, RuntimeError, EOFError):
        return 0


@pytest.mark.parametrize("read", ["random", "stream"])
def test_ddp_over_uneven_shards_finishes_and_evaluates_each_sample_once(data, tmp_path, read):
    """Two gloo ranks over 3 shards of 5, 5 and 2 samples: the same number of steps on both ranks
    (no hang), and the final evaluation from shards counts each of the 12 samples once."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "avfusion",
           "train", "--train", str(data["shards"]), "--val", str(data["shards"]), "--out", str(out),
           "--workers", "0", *COMMON, "--batch-size", "2", "run.save_every=100", f"data.read_shards={read}",
           "schedule.epochs=2"]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "eval.json").read_text())
    assert report["conditions"]["audio+video"]["num_videos"] == 12
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))  # 12 samples / (2 ranks x batch 2) = 3 steps per epoch, 2 epochs
