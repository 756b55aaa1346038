"""End to end on real (generated) mp4 clips: train -> eval -> predict through the CLI."""

import json

import pytest
import torch

from avfusion.cli import main

from helpers.avclips import make_dataset, write_clip, write_labels


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("avclips")
    train = make_dataset(root / "train", 6, seed=0)
    val = make_dataset(root / "val", 2, seed=1)
    labels = write_labels(root / "labels.csv")
    write_clip(root / "silent.mp4", 2, seed=7, audio=False)
    return {"train": train, "val": val, "labels": labels, "root": root}


def test_train_eval_predict(data, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--model", "zorro_vit_tiny", "--train", str(data["train"]), "--val", str(data["val"]),
               "--labels", str(data["labels"]), "--out", str(out), "--max-steps", "40", "--batch-size", "8",
               "--workers", "0", "--json", "optim.name=adamw", "optim.lr=0.002", "run.progress=false",
               "schedule.warmup_steps=4", "data.eval_clips=2", "data.eval_crops=1",
               "data.augment={freq_mask: 8, time_mask: 16}"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 40
    # the model learned the colour / tone code of the classes
    assert summary["audio+video top1"] >= 0.75
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["class_names"] == ["c0", "c1", "c2", "c3"] and cfg["task"] == "single"

    rc = main(["eval", "--model", str(out), "--data", str(data["val"]), "--labels", str(data["labels"]),
               "--clips", "2", "--crops", "3", "--json", "--out", str(tmp_path / "eval")])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    conds = report["conditions"]
    assert set(conds) == {"audio+video", "audio only", "video only"}
    assert set(conds["audio+video"]["outputs"]) == {"logits", "audio", "video", "fusion", "global"}
    assert conds["audio+video"]["num_videos"] == 8
    assert report["summary"]["audio+video"]["top1"] >= 0.75
    # Zorro: the audio output is exactly the same with or without video
    assert conds["audio only"]["outputs"]["audio"] == conds["audio+video"]["outputs"]["audio"]
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()

    clip = data["root"] / "val" / "clip_1_0.mp4"
    rc = main(["predict", str(clip), str(data["root"] / "silent.mp4"), "--model", str(out), "--top-k", "2",
               "--json"])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert lines[0]["outputs"]["logits"][0]["label"] == "c1"
    assert lines[1]["has_audio"] is False and "no audio stream" in lines[1]["notes"][0]
    assert set(lines[1]["outputs"]) == {"logits", "video", "fusion", "global"}


def test_predict_without_model_is_a_clear_error(tmp_path, capsys):
    assert main(["predict", "x.mp4", "--model", str(tmp_path / "nope")]) == 2
    assert "no model directory" in capsys.readouterr().err


def test_pretrain_then_linear_probe(data, tmp_path, capsys):
    pre = tmp_path / "pre"
    rc = main(["pretrain", "--model", "zorro_vit_tiny", "--train", str(data["train"]), "--out", str(pre),
               "--max-steps", "3", "--batch-size", "8", "--workers", "0", "--json", "run.progress=false",
               "optim.name=adamw", "optim.lr=0.001", "contrastive.proj_hidden=0", "contrastive.proj_dim=32"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["final_loss"] > 0
    from avfusion.train.checkpoint import find_checkpoint

    assert (find_checkpoint(pre) / "extra.safetensors").is_file()  # the projectors are checkpointed
    hist = [json.loads(x) for x in (pre / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_audio-fusion", "loss_video-fusion", "loss_audio-video"} <= set(hist[-1])

    from safetensors.torch import load_file

    probe = tmp_path / "probe"
    rc = main(["train", "--init-from", str(pre), "--train", str(data["train"]), "--labels", str(data["labels"]),
               "--out", str(probe), "--max-steps", "2", "--batch-size", "8", "--workers", "0",
               "linear_probe=true", "run.progress=false", "optim.name=adamw", "optim.lr=0.01"])
    assert rc == 0
    before, after = load_file(str(pre / "model.safetensors")), load_file(str(probe / "model.safetensors"))
    frozen = [k for k in after if not k.startswith("head.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # the backbone did not move
    heads = [k for k in after if k.startswith("head.") and k.endswith("weight")]
    assert heads and all(after[k].shape[0] == 4 and after[k].abs().sum() > 0 for k in heads)  # new 4-way heads, trained
