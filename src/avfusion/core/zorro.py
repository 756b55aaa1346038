"""What every Zorro model (ViT and its ablations, Swin, HiP) shares: the token set-up, the
masked readout with one classifier per output, and the rule for ``logits``.

Subclasses build their encoder and implement ``forward_features``; the readout and heads
(``_build_readout_and_heads``) come last so parameters initialise in the same order in every
backbone. ``logits`` is the ``eval_output`` head, or the present modality's own head when the
other one is missing, so a trainer or evaluator cannot tell the Zorro backbones apart by their
outputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from avfusion.heads.readout import Readout, readout_outputs
from avfusion.layers.linear import Linear
from avfusion.layers.masks import TokenType
from avfusion.core.base import (
    MODALITY_TYPES,
    AVModel,
    Tokens,
    init_weights,
    lay_out,
    make_tokenizer,
    present_modalities,
)
from avfusion.core.config import MODALITIES, ModelConfig


class ZorroModel(AVModel):
    """Base of the Zorro family (``masked``, ``swin``, ``hip``).

    ``backbone``: how notes name the backbone ("Zorro-Swin"); None for the ViT stack, whose
    routing rule varies with the ablation and is named instead.
    """

    backbone: str | None = None

    def __init__(self, cfg: ModelConfig, family: str):
        super().__init__(cfg)
        if cfg.family != family:
            raise ValueError(f"{type(self).__name__} builds family {family!r}, got {cfg.family!r}")
        self.outputs = readout_outputs(cfg.num_fusion_tokens)  # eval_output is checked against these by the config
        # Checkpoints saved before fusion tokens became optional hold a (1, 0, D) "fusion_tokens".
        self.register_load_state_dict_pre_hook(_drop_empty_fusion_tokens)

    # -- the token set-up every Zorro backbone shares ----------------------------------------
    def _build_tokens(self, fusion_tokens: bool) -> None:
        """Patch embeddings and learned positions per modality (no CLS: the readout pools), and,
        with ``fusion_tokens``, the ``num_fusion_tokens`` learned fusion tokens that enter the
        encoder (none when there are none: the independent-streams ablation, or HiP, whose fusion
        latents live in its stages)."""
        cfg = self.cfg
        self.tokens = make_tokenizer(cfg, use_cls=False)
        if fusion_tokens and cfg.num_fusion_tokens > 0:
            self.fusion_tokens = nn.Parameter(torch.randn(1, cfg.num_fusion_tokens, cfg.embed_dim) * 0.02)
        else:
            self.register_parameter("fusion_tokens", None)

    def embed(self, inputs: dict[str, torch.Tensor]) -> Tokens:
        """Inputs -> the encoder's input tokens [audio ; video ; fusion] (B, L, D) and their layout,
        for the present modalities. Used by Zorro-ViT, -Swin and -HiP alike."""
        present = present_modalities(inputs)
        parts = [(m, MODALITY_TYPES[m], self.tokens(m, inputs[m])) for m in present]  # each (B, N_m, D)
        if self.fusion_tokens is not None:
            B = parts[0][2].shape[0]
            parts.append(("fusion", TokenType.FUSION, self.fusion_tokens.expand(B, -1, -1)))  # (B, n_f, D)
        x = torch.cat([t for _, _, t in parts], dim=1)  # (B, L, D)
        groups = lay_out([(name, kind, t.shape[1]) for name, kind, t in parts])
        return Tokens(x, groups, present, {m: tuple(self.tokens.grid(m)) for m in present})

    def _missing_note(self, present: tuple[str, ...]) -> list[str]:
        """The note a unimodal forward pass carries (none when both modalities are given)."""
        if len(present) != 1:
            return []
        cfg, (only,) = self.cfg, present
        absent = next(m for m in MODALITIES if m not in present)
        pure = cfg.fusion in ("zorro", "unimodal")
        ran = f"{self.backbone} ran" if self.backbone else "ran"
        fused = cfg.num_fusion_tokens > 0 and cfg.fusion_layer < cfg.depth
        return [
            f"{absent} absent: {ran} on {only} tokens" + (" and fusion tokens" if fused else "")
            + (f"; the {only} output is exactly the multimodal model's ({cfg.fusion} routing keeps it pure)"
               if pure else f"; under {cfg.fusion!r} routing the {only} output is not modality-pure, "
               "so it differs from the multimodal model's")
            + f"; logits = {only} output"
        ]

    # -- readout and heads -------------------------------------------------------------------
    def _build_readout_and_heads(self, dim: int, num_heads: int, mlp_dim: int) -> None:
        """The end every Zorro backbone shares: final norm, masked readout, initialisation, heads."""
        cfg = self.cfg
        self.num_features = dim
        self.norm = nn.LayerNorm(dim, eps=cfg.ln_eps)
        self.readout = Readout(dim, num_heads, mlp_dim, self.outputs, cfg.qkv_bias, cfg.ln_eps, cfg.gelu,
                               cfg.attn_impl)
        init_weights(self)
        self.head = nn.ModuleDict({o: Linear(dim, cfg.num_classes) for o in self.outputs})
        for h in self.head.values():
            self._init_head(h)

    def heads(self) -> dict[str, nn.Linear]:
        return dict(self.head.items())

    def _set_head(self, name: str, head: nn.Linear) -> None:
        self.head[name] = head

    def _pool(self, x: Tokens) -> dict[str, torch.Tensor]:
        """Zorro's readout: one learned query per output reads its tokens through a mask -> (B, D) each."""
        return self.readout(x.x, x.segments)

    def _classify(self, feats: dict[str, torch.Tensor],
                  present: tuple[str, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outputs = {o: self.head[o](f) for o, f in feats.items()}  # o -> (B, C)
        if len(present) == 1:
            logits = outputs[present[0]]
        elif self.cfg.eval_output == "mean":
            logits = torch.stack(list(outputs.values()), dim=0).mean(dim=0)
        else:
            logits = outputs[self.cfg.eval_output]
        return logits, outputs

    def _no_decay_params(self) -> dict[str, Iterable[nn.Parameter]]:
        return {
            "pos_embed": self.tokens.pos_embed.values(),
            "fusion_tokens": [] if self.fusion_tokens is None else [self.fusion_tokens],
            "readout_query": self.readout.query.values(),
        }


def _drop_empty_fusion_tokens(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load hook: a model without fusion tokens accepts an old checkpoint's empty (1, 0, D) tensor."""
    key = prefix + "fusion_tokens"
    if getattr(module, "fusion_tokens", None) is None and key in state_dict and state_dict[key].numel() == 0:
        del state_dict[key]
