"""Model directories: save_pretrained -> load_pretrained gives the same model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import avfusion
from avfusion.models.pretrained import CONFIG_NAME, WEIGHTS_NAME


@pytest.mark.parametrize("name", ["mbt_tiny", "mbt_tiny_shared", "mbt_tiny_xattn", "zorro_vit_tiny"])
def test_round_trip_identical_outputs(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = avfusion.create_model(name, head_zero_init=False, class_names=[f"c{i}" for i in range(10)]).eval()
    inputs = model.example_inputs(2, generator=torch.Generator().manual_seed(1))
    avfusion.save_pretrained(model, tmp_path / name)
    assert sorted(p.name for p in (tmp_path / name).iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    cfg = json.loads((tmp_path / name / CONFIG_NAME).read_text())
    assert cfg["name"] == name and cfg["image_size"] == [32, 32]  # plain JSON; tuples are lists

    loaded = avfusion.load_pretrained(tmp_path / name)
    assert not loaded.training and loaded.cfg == model.cfg
    with torch.no_grad():
        a, b = model(inputs), loaded(inputs)
    assert torch.equal(a.logits, b.logits)
    assert a.outputs.keys() == b.outputs.keys()
    assert all(torch.equal(a.outputs[k], b.outputs[k]) for k in a.outputs)
    assert a.logits.abs().max() > 0  # a non-zero head, so equality means something


def test_overrides(tmp_path: Path) -> None:
    model = avfusion.create_model("mbt_tiny", head_zero_init=False).eval()
    avfusion.save_pretrained(model, tmp_path / "m")
    dense = avfusion.load_pretrained(tmp_path / "m", attn_impl="dense")
    assert dense.cfg.attn_impl == "dense"
    inputs = model.example_inputs(1)
    with torch.no_grad():
        torch.testing.assert_close(dense(inputs).logits, model(inputs).logits)
    with pytest.raises(ValueError, match=r"tensor 'head\.(weight|bias)' has shape \(10.* expects \(3"):
        avfusion.load_pretrained(tmp_path / "m", num_classes=3)


def test_not_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a directory"):
        avfusion.load_pretrained(tmp_path / "missing")
    (tmp_path / "d").mkdir()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_NAME):
        avfusion.load_pretrained(tmp_path / "d")


def test_one_writer_for_model_directories(tmp_path: Path) -> None:
    """save_pretrained, a training checkpoint and the final model of a run hold the same files:
    one writer (models/pretrained.model_files), not two copies of it."""
    from safetensors import safe_open

    from avfusion.train.checkpoint import save_checkpoint, write_model_dir

    def weights(folder: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
        # (metadata, tensors): safetensors writes metadata keys in no fixed order, so not the bytes
        with safe_open(str(folder / WEIGHTS_NAME), "pt") as f:
            return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}

    model = avfusion.create_model("mbt_tiny", num_classes=3, head_zero_init=False)
    avfusion.save_pretrained(model, tmp_path / "saved")
    ckpt = save_checkpoint(tmp_path / "run", model, {}, {"step": 1})
    write_model_dir(model, tmp_path / "final")
    meta, ref = weights(tmp_path / "saved")
    assert meta == {"format": "pt", "avfusion_model": "mbt_tiny"}
    for folder in (ckpt, tmp_path / "final"):
        assert (folder / CONFIG_NAME).read_bytes() == (tmp_path / "saved" / CONFIG_NAME).read_bytes()
        m, w = weights(folder)
        assert m == meta and w.keys() == ref.keys() and all(torch.equal(w[k], ref[k]) for k in ref)
    assert sorted(p.name for p in (tmp_path / "final").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
