"""Contrastive projectors and InfoNCE (heads/projector.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from avfusion.heads.projector import ContrastiveHead, info_nce


def test_info_nce_values():
    z = F.normalize(torch.randn(8, 16), dim=-1)
    # Perfectly aligned, orthogonal-ish pairs at a low temperature: loss near 0.
    eye = torch.eye(8, 16)
    assert info_nce(eye, eye, 0.08).item() < 1e-3
    # Identical embeddings everywhere: every candidate scores the same -> log(B).
    same = F.normalize(torch.ones(8, 16), dim=-1)
    assert info_nce(same, same, 0.08).item() == pytest.approx(math.log(8), abs=1e-5)
    # Symmetric in its arguments.
    w = F.normalize(torch.randn(8, 16), dim=-1)
    assert info_nce(z, w, 0.1).item() == pytest.approx(info_nce(w, z, 0.1).item(), abs=1e-6)


def test_contrastive_head_pairs_and_errors():
    head = ContrastiveHead(32, [["audio", "fusion"], ["video", "fusion"], ["audio", "video"]], 16, 0, 0.08)
    assert sorted(head.proj) == ["audio", "fusion", "video"]  # three projectors
    feats = {k: torch.randn(4, 32) for k in ("audio", "video", "fusion", "global")}
    losses = head(feats)
    assert set(losses) == {"audio-fusion", "video-fusion", "audio-video"}
    with pytest.raises(ValueError, match="two different outputs"):
        ContrastiveHead(32, [["audio", "audio"]])
    with pytest.raises(ValueError, match="did not produce"):
        head({"audio": torch.randn(4, 32), "fusion": torch.randn(4, 32)})
