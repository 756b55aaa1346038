"""The "masked" family: Zorro and its ablations as one stack with routing masks.

One transformer with shared weights runs over [audio tokens ; video tokens ; fusion tokens].
Which tokens may read which is set by a routing rule (avfusion.layers.masks.RULES):

- ``zorro``: audio reads audio, video reads video, fusion tokens read everything;
- ``bottleneck_mask``: as Zorro, but modality tokens also read the fusion tokens (MBT's
  bottleneck expressed as a mask; the Zorro paper's "bottleneck masking" ablation);
- ``all``: input-level fusion, every token reads every token;
- ``unimodal``: independent streams (no cross-modal connection in the encoder).

Layers before ``fusion_layer`` use the ``unimodal`` rule. The readout (heads/readout.py) gives
four outputs (audio, video, fusion, global), each with its own classifier.

Missing modality: the absent modality's tokens are simply not there. Under ``zorro`` the audio
tokens never read video or fusion tokens, so the audio output is exactly what it would be with
video present (tested by omission and by perturbation); ``logits`` is then the present
modality's own output. Schemes whose audio tokens do read other tokens (``bottleneck_mask``,
``all``) still run, but their unimodal outputs are not the multimodal model's, and a note says so.
"""

from __future__ import annotations

import torch
from torch import nn

from avfusion.heads.readout import OUTPUTS
from avfusion.layers.block import Block, drop_path_rates
from avfusion.layers.masks import RULES, TokenType, segments_of, self_mask
from avfusion.layers.tokenizer import ModalityTokenizer
from avfusion.backbones.common import ZorroHeads
from avfusion.models.base import present_modalities
from avfusion.models.config import MODALITIES, ModelConfig

_TYPE = {"audio": TokenType.AUDIO, "video": TokenType.VIDEO}


class MaskedFusion(ZorroHeads):
    def __init__(self, cfg: ModelConfig):
        outputs = OUTPUTS if cfg.num_fusion_tokens > 0 else tuple(o for o in OUTPUTS if o != "fusion")
        super().__init__(cfg, "masked", outputs)
        D = cfg.embed_dim
        self.tokens = ModalityTokenizer(cfg, use_cls=False)
        self.fusion_tokens = nn.Parameter(torch.randn(1, cfg.num_fusion_tokens, D) * 0.02)
        dpr = drop_path_rates(cfg.depth, cfg.drop_path_rate)
        self.blocks = nn.ModuleList(
            Block(D, cfg.num_heads, cfg.mlp_dim, cfg.qkv_bias, cfg.ln_eps, cfg.gelu,
                  cfg.drop_rate, cfg.attn_drop_rate, dpr[i], cfg.attn_impl)
            for i in range(cfg.depth)
        )
        self._build_readout_and_heads(D, cfg.num_heads, cfg.mlp_dim)

    def forward_features(self, inputs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        cfg = self.cfg
        present = present_modalities(inputs)
        parts = [self.tokens(m, inputs[m]) for m in present]  # each (B, N_m, D)
        B = parts[0].shape[0]
        parts.append(self.fusion_tokens.expand(B, -1, -1))  # (B, n_f, D)
        x = torch.cat(parts, dim=1)  # (B, L, D), L = sum N_m + n_f
        segments = segments_of([*(_TYPE[m] for m in present), TokenType.FUSION],
                               [p.shape[1] for p in parts])
        early = self_mask(segments, RULES["unimodal"])
        late = self_mask(segments, RULES[cfg.fusion])
        for layer, block in enumerate(self.blocks):
            x = self._run_block(block, x, early if layer < cfg.fusion_layer else late)
        x = self.norm(x)
        feats = self.readout(x, segments)  # output -> (B, D)

        notes = []
        if len(present) == 1:
            absent = next(m for m in MODALITIES if m not in present)
            pure = cfg.fusion in ("zorro", "unimodal")
            notes.append(
                f"{absent} absent: ran on {present[0]} tokens"
                + ("" if cfg.fusion_layer >= cfg.depth else " and fusion tokens")
                + (f"; the {present[0]} output is exactly the multimodal model's ({cfg.fusion} routing keeps it pure)"
                   if pure else f"; under {cfg.fusion!r} routing the {present[0]} output is not modality-pure, "
                   "so it differs from the multimodal model's")
                + f"; logits = {present[0]} output"
            )
        return feats, notes
