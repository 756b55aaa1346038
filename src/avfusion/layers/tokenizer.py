"""Inputs -> tokens for each modality: patch embedding, optional CLS token, learned positions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from avfusion.layers.patch_embed import SpectrogramEmbed, TubeletEmbed


class ModalityTokenizer(nn.Module):
    """Per modality: patch embedding, a CLS token (optional) and a learned position embedding.

    Parameters are named as timm names a ViT's (``embed.video.proj``, ``cls_token.video``,
    ``pos_embed.video``) so ImageNet weights map onto them directly. The position embedding
    covers the CLS slot, as in scenic and timm: (1, 1 + N, D) with a CLS token, else (1, N, D).
    Sizes come as plain values (``avfusion.core.base.make_tokenizer`` reads them from a
    ModelConfig), so this layer knows nothing of configs.
    """

    def __init__(self, dim: int, modalities: Sequence[str], *, use_cls: bool,
                 spec_size: tuple[int, int], spec_patch: tuple[int, int],
                 num_frames: int, image_size: tuple[int, int], tubelet: tuple[int, int, int]):
        super().__init__()
        self.use_cls = use_cls
        makers = {
            "audio": lambda: SpectrogramEmbed(dim, spec_size, spec_patch),
            "video": lambda: TubeletEmbed(dim, num_frames, image_size, tubelet),
        }
        unknown = [m for m in modalities if m not in makers]
        if unknown:
            raise ValueError(f"no patch embedding for modalities {unknown}; known: {sorted(makers)}")
        self.embed = nn.ModuleDict({m: makers[m]() for m in modalities})
        prefix = 1 if use_cls else 0
        self.cls_token = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(1, 1, dim)) for m in self.embed} if use_cls else {}
        )
        self.pos_embed = nn.ParameterDict({
            m: nn.Parameter(torch.randn(1, prefix + e.num_patches, dim) * 0.02)  # BERT init, as scenic
            for m, e in self.embed.items()
        })

    def num_tokens(self, modality: str) -> int:
        """Tokens this modality contributes: its patches, plus the CLS token if there is one."""
        return self.pos_embed[modality].shape[1]

    def grid(self, modality: str) -> tuple[int, ...]:
        """The patch grid of a modality: video (T', H', W'), spectrogram (T', F')."""
        return self.embed[modality].grid

    def forward(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) raw input -> (B, [1 +] N, D) tokens with positions added."""
        t = self.embed[modality](x)  # (B, N, D)
        if self.use_cls:
            t = torch.cat([self.cls_token[modality].expand(t.shape[0], -1, -1), t], dim=1)
        return t + self.pos_embed[modality]
