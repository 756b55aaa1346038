"""The "masked" family: Zorro and its ablations as one stack with routing masks.

One transformer with shared weights runs over [audio tokens ; video tokens ; fusion tokens].
Which tokens may read which is set by a routing rule (avfusion.layers.masks.RULES):

- ``zorro``: audio reads audio, video reads video, fusion tokens read everything;
- ``bottleneck_mask``: as Zorro, but modality tokens also read the fusion tokens (MBT's
  bottleneck expressed as a mask; the Zorro paper's "bottleneck masking" ablation);
- ``all``: input-level fusion, every token reads every token;
- ``unimodal``: independent streams (no cross-modal connection in the encoder).

Layers before ``fusion_layer`` use the ``unimodal`` rule. The readout (heads/readout.py) gives
four outputs (audio, video, fusion, global), each with its own classifier; without fusion tokens
(the independent-streams ablation) there is no fusion output and no ``fusion_tokens`` parameter.
The token set-up, readout and heads are those of every Zorro backbone (models/zorro.py).

Missing modality: the absent modality's tokens are simply not there. Under ``zorro`` the audio
tokens never read video or fusion tokens, so the audio output is exactly what it would be with
video present (tested by omission and by perturbation); ``logits`` is then the present
modality's own output. Schemes whose audio tokens do read other tokens (``bottleneck_mask``,
``all``) still run, but their unimodal outputs are not the multimodal model's, and a note says so.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from avfusion.layers.block import Block, drop_path_rates
from avfusion.layers.masks import RULES, self_mask
from avfusion.core.base import Tokens
from avfusion.core.config import ModelConfig
from avfusion.core.zorro import ZorroModel


class MaskedFusion(ZorroModel):
    """Zorro-ViT and its ablations (family ``masked``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, "masked")
        D = cfg.embed_dim
        self._build_tokens(fusion_tokens=True)
        dpr = drop_path_rates(cfg.depth, cfg.drop_path_rate)
        self.blocks = nn.ModuleList(
            Block(D, cfg.num_heads, cfg.mlp_dim, cfg.qkv_bias, cfg.ln_eps, cfg.gelu,
                  cfg.drop_rate, cfg.attn_drop_rate, dpr[i], cfg.attn_impl)
            for i in range(cfg.depth)
        )
        self._build_readout_and_heads(D, cfg.num_heads, cfg.mlp_dim)

    def forward_features(self, inputs: dict[str, torch.Tensor]) -> tuple[Tokens, list[str]]:
        """Inputs -> final [audio ; video ; fusion] tokens (B, L, D) after the final norm, and notes."""
        cfg = self.cfg
        t = self.embed(inputs)  # (B, L, D), L = sum N_m + n_f
        early = self_mask(t.segments, RULES["unimodal"])
        late = self_mask(t.segments, RULES[cfg.fusion])
        x = t.x
        for layer, block in enumerate(self.blocks):
            x = self._run_block(block, x, early if layer < cfg.fusion_layer else late)
        return dataclasses.replace(t, x=self.norm(x)), self._missing_note(t.present)
