"""Inputs -> tokens for each modality: patch embedding, optional CLS token, learned positions."""

from __future__ import annotations

import torch
from torch import nn

from avfusion.layers.patch_embed import SpectrogramEmbed, TubeletEmbed
from avfusion.models.config import ModelConfig


class ModalityTokenizer(nn.Module):
    """Per modality: patch embedding, a CLS token (optional) and a learned position embedding.

    Parameters are named as timm names a ViT's (``embed.video.proj``, ``cls_token.video``,
    ``pos_embed.video``) so ImageNet weights map onto them directly. The position embedding
    covers the CLS slot, as in scenic and timm: (1, 1 + N, D) with a CLS token, else (1, N, D).
    """

    def __init__(self, cfg: ModelConfig, use_cls: bool):
        super().__init__()
        D = cfg.embed_dim
        self.use_cls = use_cls
        makers = {
            "audio": lambda: SpectrogramEmbed(D, cfg.spec_size, cfg.spec_patch),
            "video": lambda: TubeletEmbed(D, cfg.num_frames, cfg.image_size, cfg.tubelet),
        }
        self.embed = nn.ModuleDict({m: makers[m]() for m in cfg.modalities})
        prefix = 1 if use_cls else 0
        self.cls_token = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(1, 1, D)) for m in self.embed} if use_cls else {}
        )
        self.pos_embed = nn.ParameterDict({
            m: nn.Parameter(torch.randn(1, prefix + e.num_patches, D) * 0.02)  # BERT init, as scenic
            for m, e in self.embed.items()
        })

    def num_tokens(self, modality: str) -> int:
        return self.pos_embed[modality].shape[1]

    def grid(self, modality: str) -> tuple[int, ...]:
        return self.embed[modality].grid

    def forward(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) raw input -> (B, [1 +] N, D) tokens with positions added."""
        t = self.embed[modality](x)  # (B, N, D)
        if self.use_cls:
            t = torch.cat([self.cls_token[modality].expand(t.shape[0], -1, -1), t], dim=1)
        return t + self.pos_embed[modality]
