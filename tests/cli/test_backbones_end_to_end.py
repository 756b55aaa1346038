"""Zorro-Swin and Zorro-HiP through the command line on generated mp4 clips: pretrain, train,
eval (every modality condition), predict (a clip without audio)."""

from __future__ import annotations

import json

import pytest

from avfusion.cli import main

from helpers.avclips import make_dataset, write_clip, write_labels

COMMON = ["--workers", "0", "--batch-size", "4", "run.progress=false", "schedule.warmup_steps=1",
          "data.eval_clips=1", "data.eval_crops=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("avclips_backbones")
    train = make_dataset(root / "train", 2, seed=0)
    labels = write_labels(root / "labels.csv")
    write_clip(root / "silent.mp4", 2, seed=7, audio=False)
    return {"train": train, "labels": labels, "root": root}


@pytest.mark.parametrize("name", ["zorro_swin_tiny", "zorro_hip_tiny"])
def test_pretrain_train_eval_predict(name: str, data, tmp_path, capsys) -> None:
    pre = tmp_path / "pre"
    assert main(["pretrain", "--model", name, "--train", str(data["train"]), "--labels", str(data["labels"]),
                 "--out", str(pre), "--max-steps", "2", *COMMON]) == 0
    assert (pre / "model.safetensors").is_file()
    capsys.readouterr()

    run = tmp_path / "run"
    assert main(["train", "--model", name, "--train", str(data["train"]), "--labels", str(data["labels"]),
                 "--out", str(run), "--max-steps", "2", "--json", *COMMON]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2
    assert json.loads((run / "config.json").read_text())["family"] == name.split("_")[1]

    assert main(["eval", "--model", str(run), "--data", str(data["train"]), "--labels", str(data["labels"]),
                 "--clips", "1", "--crops", "1", "--json", "--out", str(tmp_path / "eval")]) == 0
    conds = json.loads(capsys.readouterr().out)["conditions"]
    assert set(conds) == {"audio+video", "audio only", "video only"}
    # Zorro's promise on this backbone too: unimodal outputs do not depend on the other modality.
    assert conds["audio only"]["outputs"]["audio"] == conds["audio+video"]["outputs"]["audio"]
    assert conds["video only"]["outputs"]["video"] == conds["audio+video"]["outputs"]["video"]

    assert main(["predict", str(data["root"] / "silent.mp4"), "--model", str(run), "--json"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["has_audio"] is False and set(line["outputs"]) == {"logits", "video", "fusion", "global"}
