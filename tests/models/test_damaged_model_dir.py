"""A damaged model directory is one line naming the file and what is wrong (exit 2), in every
command that takes one: predict, eval, embed, export and `train --init-from` (all load through
models/pretrained.py load_pretrained), and eval --retrieval's projectors.safetensors. Before, each
of these was a SafetensorError or JSONDecodeError traceback."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch

from avfusion.cli import main
from avfusion.eval.retrieval import save_projectors
from avfusion.heads.projector import ContrastiveHead
from avfusion.models.pretrained import load_pretrained, read_safetensors, save_pretrained
from avfusion.models.registry import create_model

from helpers.avclips import make_dataset, write_labels

CLASSES = ["c0", "c1", "c2", "c3"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("damaged_model")
    torch.manual_seed(0)
    model = create_model("zorro_vit_tiny", num_classes=4, class_names=CLASSES, task="single")
    good = save_pretrained(model, root / "good")
    head = ContrastiveHead(model.num_features, [("audio", "video")], out_dim=8, hidden=16)
    save_projectors(good, head, {"dim": model.num_features, "out_dim": 8, "hidden": 16, "temperature": 0.1,
                                 "pairs": [["audio", "video"]]})
    torch.save(model.state_dict(), root / "state.pt")  # a torch.save zip
    manifest = make_dataset(root / "clips", 1)
    return {"root": root, "good": good, "manifest": manifest, "labels": write_labels(root / "labels.csv"),
            "state": root / "state.pt"}


def _cut_weights(d: Path, s: dict[str, Path]) -> tuple[Path, str]:
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    return w, "is cut short"


def _pickle_zip(d: Path, s: dict[str, Path]) -> tuple[Path, str]:
    shutil.copy(s["state"], d / "model.safetensors")
    return d / "model.safetensors", "is a pickle (torch.save), not a safetensors file"


def _pickle_bare(d: Path, s: dict[str, Path]) -> tuple[Path, str]:
    w = d / "model.safetensors"
    torch.save({"x": torch.zeros(3)}, w, _use_new_zipfile_serialization=False)  # the legacy format: \x80...
    return w, "is a pickle (torch.save), not a safetensors file"


def _garbled_config(d: Path, s: dict[str, Path]) -> tuple[Path, str]:
    c = d / "config.json"
    c.write_text(c.read_text()[:40])
    return c, "is not valid JSON"


def _config_not_a_config(d: Path, s: dict[str, Path]) -> tuple[Path, str]:
    c = d / "config.json"
    c.write_text('{"name": "zorro_vit_tiny", "depth": "deep"}')
    return c, "is not a usable model config: config key 'depth' expects int"


DAMAGE: dict[str, Callable[[Path, dict[str, Path]], tuple[Path, str]]] = {
    "cut weights": _cut_weights, "pickle zip": _pickle_zip, "bare pickle": _pickle_bare,
    "garbled config": _garbled_config, "config of wrong types": _config_not_a_config,
}


def _argv(command: str, d: Path, s: dict[str, Path], tmp: Path) -> list[str]:
    clip = str(next((s["manifest"].parent).glob("*.mp4")))
    data = ["--data", str(s["manifest"])]
    return {
        "predict": ["predict", clip, "--model", str(d)],
        "predict --data": ["predict", *data, "--model", str(d), "--out", str(tmp / "p.jsonl"), "--no-progress"],
        "predict --timeline": ["predict", clip, "--timeline", "--model", str(d)],
        "eval": ["eval", "--model", str(d), *data, "--labels", str(s["labels"]), "--clips", "1", "--crops", "1",
                 "--out", str(tmp / "ev")],
        "embed": ["embed", "--model", str(d), *data, "--out", str(tmp / "e.npz"), "--no-progress"],
        "export": ["export", "--model", str(d), "--out", str(tmp / "m.pt2")],
        "train --init-from": ["train", "--model", "zorro_vit_tiny", "--train", str(s["manifest"]), "--labels",
                              str(s["labels"]), "--out", str(tmp / "run"), "--init-from", str(d), "--max-steps", "1",
                              "run.progress=false"],
    }[command]


COMMANDS = ["predict", "predict --data", "predict --timeline", "eval", "embed", "export", "train --init-from"]


def _one_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("command", COMMANDS)
def test_a_damaged_model_directory_is_one_line_naming_the_file(setup, damage, command, tmp_path, capsys):
    d = tmp_path / "model"
    shutil.copytree(setup["good"], d)
    path, what = DAMAGE[damage](d, setup)
    assert main(_argv(command, d, setup, tmp_path)) == 2
    line = _one_line(capsys)
    assert line.startswith(f"avfusion {command.split()[0]}: error: ") and str(path) in line and what in line, line


def test_damaged_projectors_in_eval_retrieval(setup, tmp_path, capsys):
    d = tmp_path / "model"
    shutil.copytree(setup["good"], d)
    proj = d / "projectors.safetensors"
    proj.write_bytes(proj.read_bytes()[:100])
    argv = ["eval", "--model", str(d), "--data", str(setup["manifest"]), "--labels", str(setup["labels"]),
            "--clips", "1", "--crops", "1", "--out", str(tmp_path / "ev"), "--retrieval"]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert str(proj) in line and "is cut short: 100 bytes" in line, line
    shutil.copy(setup["state"], proj)
    assert main(argv) == 2
    assert "is a pickle" in _one_line(capsys)


def test_weights_cut_inside_the_tensors_and_other_bytes(setup, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(setup["good"], d)
    w = d / "model.safetensors"
    full = w.read_bytes()
    w.write_bytes(full[:-10])  # the header whole, the last tensor short
    with pytest.raises(ValueError, match=rf"{len(full) - 10} bytes of the {len(full)} its index of tensors needs"):
        load_pretrained(d)
    w.write_bytes(b"GIF89a" + bytes(200))  # no header length
    with pytest.raises(ValueError, match="is not a safetensors file"):
        read_safetensors(w)
    w.write_bytes(b"")
    with pytest.raises(ValueError, match="is cut short: 0 bytes"):
        read_safetensors(w)
    good = read_safetensors(setup["good"] / "model.safetensors")
    assert good and all(t.device.type == "cpu" for t in good.values())
