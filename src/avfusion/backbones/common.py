"""What every Zorro backbone (ViT, Swin, HiP) shares: the four classifier heads and ``logits``.

The heads follow fusion/masked.py exactly (one Linear per readout output; ``logits`` is the
``eval_output`` head, or the present modality's own head when the other one is missing), so a
trainer or evaluator cannot tell the three Zorro backbones apart by their outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from avfusion.errors import ConfigError
from avfusion.heads.readout import OUTPUTS, Readout
from avfusion.models.base import AVModel, ModelOutput, init_weights, present_modalities
from avfusion.models.config import MODALITIES, ModelConfig


class ZorroHeads(AVModel):
    """Base for Zorro backbones: subclasses build ``self.head`` and implement ``forward_features``."""

    def __init__(self, cfg: ModelConfig, family: str, outputs: tuple[str, ...] = OUTPUTS):
        super().__init__(cfg)
        if cfg.family != family:
            raise ValueError(f"{type(self).__name__} builds family {family!r}, got {cfg.family!r}")
        self.outputs = outputs
        if cfg.eval_output not in (*self.outputs, "mean"):
            raise ConfigError(f"model config {cfg.name!r}: eval_output must be one of {(*self.outputs, 'mean')}, "
                              f"got {cfg.eval_output!r}")

    def _build_heads(self, dim: int) -> None:
        self.head = nn.ModuleDict({o: nn.Linear(dim, self.cfg.num_classes) for o in self.outputs})
        for h in self.head.values():
            self._init_head(h)

    def _build_readout_and_heads(self, dim: int, num_heads: int, mlp_dim: int) -> None:
        """The end every Zorro backbone shares: final norm, masked readout, initialisation, heads."""
        cfg = self.cfg
        self.num_features = dim
        self.norm = nn.LayerNorm(dim, eps=cfg.ln_eps)
        self.readout = Readout(dim, num_heads, mlp_dim, self.outputs, cfg.qkv_bias, cfg.ln_eps, cfg.gelu,
                               cfg.attn_impl)
        init_weights(self)
        self._build_heads(dim)

    def heads(self) -> dict[str, nn.Linear]:
        return dict(self.head.items())

    def _set_head(self, name: str, head: nn.Linear) -> None:
        self.head[name] = head

    def forward_features(self, inputs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        raise NotImplementedError

    def forward_head(self, feats: dict[str, torch.Tensor],
                     present: tuple[str, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outputs = {o: self.head[o](f) for o, f in feats.items()}  # o -> (B, C)
        if len(present) == 1:
            logits = outputs[present[0]]
        elif self.cfg.eval_output == "mean":
            logits = torch.stack(list(outputs.values()), dim=0).mean(dim=0)
        else:
            logits = outputs[self.cfg.eval_output]
        return logits, outputs

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        feats, notes = self.forward_features(inputs)
        logits, outputs = self.forward_head(feats, present_modalities(inputs))
        return ModelOutput(logits=logits, outputs=outputs, features=feats, notes=notes)


def missing_note(present: tuple[str, ...], backbone: str) -> list[str]:
    """The note a unimodal forward pass carries (empty when both modalities are given)."""
    if len(present) != 1:
        return []
    (only,) = present
    absent = next(m for m in MODALITIES if m not in present)
    return [f"{absent} absent: {backbone} ran on {only} tokens and fusion tokens; the {only} output is "
            f"exactly the multimodal model's (zorro routing keeps it pure); logits = {only} output"]
