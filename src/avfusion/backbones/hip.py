"""Zorro-HiP: Zorro's routing on a Hierarchical Perceiver backbone (docs/zorro_swin_hip.md).

The latents are split into three groups: audio, video and fusion. Each stage

1. encodes: its latents cross-attend to the previous stage's tokens (the patch tokens for the
   first stage) with Zorro routing: audio latents read audio, video latents read video, fusion
   latents read everything (including the previous fusion latents);
2. processes: ``depths[s]`` pre-LN self-attention blocks over the latents, again with Zorro
   routing (audio latents attend audio latents, ...).

Stages have fewer latents and more channels as they go (HiP's hierarchy). The token set-up
(patch tokens + positions) and the readout are every Zorro model's (models/zorro.py): four learned
queries read the last stage's latents (audio query -> audio latents, ..., global query -> all).

All groups share every weight (one cross-attention and one block stack per stage), so the
only per-group parameters are the latents themselves. A missing modality's latents are not
instantiated (they would have no key to read); the others are unaffected by construction.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from avfusion.layers.block import Block, CrossBlock, drop_path_rates
from avfusion.layers.linear import Linear
from avfusion.layers.masks import RULES, Segment, TokenMask, TokenType, self_mask
from avfusion.core.base import MODALITY_TYPES, Tokens, lay_out
from avfusion.core.config import ModelConfig
from avfusion.core.zorro import ZorroModel

# Latent groups: one per modality and the fusion latents.
_TYPE = {**MODALITY_TYPES, "fusion": TokenType.FUSION}


class HiPStage(nn.Module):
    """Latent groups, a (width-lifting) masked cross-attention into them, masked self-attention."""

    def __init__(self, in_dim: int, dim: int, depth: int, num_latents: int, num_fusion: int,
                 head_dim: int, mlp_ratio: float, cfg: ModelConfig, dpr: list[float]):
        super().__init__()
        heads, mlp_dim = dim // head_dim, int(dim * mlp_ratio)
        # The previous stage's tokens are narrower: one linear map lifts them to this stage's width.
        self.lift = Linear(in_dim, dim) if in_dim != dim else nn.Identity()
        self.latent_tokens = nn.ParameterDict({
            m: nn.Parameter(torch.randn(1, num_fusion if m == "fusion" else num_latents, dim) * 0.02)
            for m in _TYPE
        })
        self.encode = CrossBlock(dim, heads, mlp_dim, cfg.qkv_bias, cfg.ln_eps, cfg.gelu, cfg.drop_rate,
                                 cfg.attn_drop_rate, cfg.attn_impl)
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_dim, cfg.qkv_bias, cfg.ln_eps, cfg.gelu, cfg.drop_rate, cfg.attn_drop_rate,
                  dpr[i], cfg.attn_impl)
            for i in range(depth)
        )

    def latents(self, present: tuple[str, ...], batch: int) -> tuple[torch.Tensor, dict[str, Segment]]:
        """(B, n_lat, D) latents of the present modalities + fusion, and their layout (named groups)."""
        names = [*present, "fusion"]
        parts = [self.latent_tokens[m].expand(batch, -1, -1) for m in names]
        return torch.cat(parts, dim=1), lay_out([(m, _TYPE[m], p.shape[1]) for m, p in zip(names, parts)])


class ZorroHiP(ZorroModel):
    """Zorro-HiP (family ``hip``). Stage s: ``num_latents[s]`` latents per modality and
    ``num_fusion_tokens`` fusion latents of width ``stage_dims[s]``, ``depths[s]`` blocks.
    Head width is embed_dim / num_heads in every stage, MLP ratio mlp_dim / embed_dim."""

    backbone = "Zorro-HiP"

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, "hip")
        assert cfg.depths and cfg.stage_dims and cfg.num_latents  # validated by ModelConfig (widths too)
        head_dim, mlp_ratio = cfg.embed_dim // cfg.num_heads, cfg.mlp_dim / cfg.embed_dim
        # Per-modality patches + learned positions; the fusion latents live in the stages.
        self._build_tokens(fusion_tokens=False)
        dpr = drop_path_rates(cfg.depth, cfg.drop_path_rate)
        dims = (cfg.embed_dim, *cfg.stage_dims)
        self.stages = nn.ModuleList(
            HiPStage(dims[s], dims[s + 1], depth, cfg.num_latents[s], cfg.num_fusion_tokens, head_dim, mlp_ratio,
                     cfg, dpr[sum(cfg.depths[:s]):sum(cfg.depths[:s + 1])])
            for s, depth in enumerate(cfg.depths)
        )
        D = cfg.stage_dims[-1]
        self._build_readout_and_heads(D, D // head_dim, int(D * mlp_ratio))

    def forward_features(self, inputs: dict[str, torch.Tensor]) -> tuple[Tokens, list[str]]:
        """Inputs -> the last stage's latents [audio ; video ; fusion] (B, n_lat, D) after the final
        norm, and notes."""
        t = self.embed(inputs)  # (B, N, embed_dim): the patch tokens [audio ; video]
        x, segments = t.x, t.segments
        for stage in self.stages:
            lat, groups = stage.latents(t.present, x.shape[0])  # (B, n_lat, D_s)
            lat_segments = tuple(groups.values())
            # Zorro routing into the latents: audio <- audio, video <- video, fusion <- all.
            into = TokenMask(lat_segments, segments, RULES["zorro"])
            x = self._run_block(stage.encode, lat, stage.lift(x), into)  # (B, n_lat, D_s)
            within = self_mask(lat_segments, RULES["zorro"])
            for block in stage.blocks:
                x = self._run_block(block, x, within)
            segments = lat_segments
        return Tokens(self.norm(x), groups, t.present), self._missing_note(t.present)

    def _no_decay_params(self) -> dict[str, Iterable[nn.Parameter]]:
        return {**super()._no_decay_params(),
                "latents": [p for stage in self.stages for p in stage.latent_tokens.values()]}
