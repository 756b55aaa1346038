"""Zorro-Swin and Zorro-HiP through the rest of avfusion: model directories, the training task
(supervised with mixed modality presence, and contrastive as in pretraining), FLOP counting."""

from __future__ import annotations

import pytest
import torch

from avfusion.cli import main as cli
from avfusion.heads.projector import ContrastiveHead
from avfusion.models import create_model
from avfusion.models.flops import count_flops
from avfusion.models.pretrained import load_pretrained, save_pretrained
from avfusion.train.task import Task

TINY = ["zorro_swin_tiny", "zorro_hip_tiny"]


def randomised(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_model(name)
    with torch.no_grad():
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.2)
    return m


@pytest.mark.parametrize("name", TINY)
def test_model_directory_round_trip(name: str, tmp_path) -> None:
    m = randomised(name).eval()
    x = m.example_inputs(2)
    loaded = load_pretrained(save_pretrained(m, tmp_path / name))
    assert loaded.cfg == m.cfg
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, m(x).logits)
        dense = load_pretrained(tmp_path / name, attn_impl="dense")
        torch.testing.assert_close(dense(x).logits, m(x).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_training_task_supervised_with_missing_modalities(name: str) -> None:
    m = randomised(name).train()
    x = m.example_inputs(4)
    batch = {**x, "label": torch.tensor([0, 1, 2, 3]),
             "has_audio": torch.tensor([True, True, False, True]),
             "has_video": torch.tensor([True, False, True, True])}
    out = Task(m, "supervised", "single")(batch)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize("name", TINY)
def test_training_task_contrastive(name: str) -> None:
    m = randomised(name).train()
    head = ContrastiveHead(m.num_features, [("audio", "video"), ("audio", "fusion"), ("video", "fusion")],
                           out_dim=16, hidden=32)
    out = Task(m, "contrastive", "single", contrastive=head)(m.example_inputs(4))
    assert torch.isfinite(out["loss"]) and {"loss_audio-video", "loss_video-fusion"} <= set(out)
    out["loss"].backward()


def test_flops_counts_and_cli(capsys) -> None:
    swin, hip = count_flops("zorro_swin_base"), count_flops("zorro_hip_base")
    vit = count_flops("zorro_vit_base")
    # Swin's windows and HiP's latents both cost less than ViT's global attention at equal inputs.
    assert hip.gflops < swin.gflops < vit.gflops
    assert 80e6 < hip.params < 120e6 and 80e6 < swin.params < 120e6
    assert cli(["flops", "zorro_*_tiny"]) == 0
    out = capsys.readouterr().out
    assert "zorro_swin_tiny" in out and "zorro_hip_tiny" in out
