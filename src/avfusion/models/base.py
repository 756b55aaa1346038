"""The surface every avfusion model shares (DESIGN.md section 1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from avfusion.errors import InputError
from avfusion.layers.attention import Attention
from avfusion.models.config import MODALITIES, ModelConfig


@dataclass
class ModelOutput:
    """What every model returns.

    logits:   (B, C) the prediction used for evaluation (the scheme's documented combination).
    outputs:  name -> (B, C) logits of each head the scheme has ("audio", "video", "fusion", "global").
    features: name -> (B, D) pooled representations behind those heads.
    notes:    plain-language remarks on how this forward pass ran (e.g. a missing modality).
    """

    logits: torch.Tensor
    outputs: dict[str, torch.Tensor]
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def present_modalities(inputs: dict[str, torch.Tensor | None],
                       supported: tuple[str, ...] = MODALITIES) -> tuple[str, ...]:
    """The modalities given in ``inputs`` that the model has streams for, in fixed order.

    A missing key or ``None`` means absent. A modality the model has no stream for (video given
    to an audio-only model) is left out; the caller says so in its notes.
    """
    unknown = set(inputs) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown input key(s) {sorted(unknown)}; a model takes {MODALITIES}")
    present = tuple(m for m in supported if inputs.get(m) is not None)
    if not present:
        # A clip without the stream the model needs (audio-only model, silent video): the data's fault.
        raise InputError(f"inputs hold none of this model's modalities {list(supported)}: at least one is needed")
    sizes = {inputs[m].shape[0] for m in present}  # type: ignore[union-attr]
    if len(sizes) > 1:
        raise ValueError(f"audio and video batch sizes differ: {sorted(sizes)}")
    return present


class AVModel(nn.Module):
    """Base class: config, example inputs, classifier reset, grad checkpointing, weight decay."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.grad_checkpointing = False
        # Width of ModelOutput.features (hierarchical backbones end wider than embed_dim).
        self.num_features = cfg.embed_dim

    # -- inputs --------------------------------------------------------------------------
    def example_inputs(self, batch_size: int = 2, device: torch.device | str | None = None,
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Random inputs at the configured sizes: video (B, 3, T, H, W), audio (B, T_a, F) (the model's modalities)."""
        c = self.cfg
        if device is None:
            device = next(self.parameters()).device
        g = dict(generator=generator) if generator is not None else {}
        out = {}
        if "video" in c.modalities:
            out["video"] = torch.randn(batch_size, 3, c.num_frames, *c.image_size, **g).to(device)
        if "audio" in c.modalities:
            out["audio"] = torch.randn(batch_size, *c.spec_size, **g).to(device)
        return out

    # -- training surface ----------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def _run_block(self, block: nn.Module, *args: object) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that should not be weight-decayed: embeddings, tokens, norms, biases."""
        skip = set()
        for name, p in self.named_parameters():
            if p.ndim <= 1 or "pos_embed" in name or "token" in name or name.startswith("bottleneck"):
                skip.add(name)
        return skip

    def heads(self) -> dict[str, nn.Linear]:
        """The classifier layers (name -> Linear); overridden by each family."""
        raise NotImplementedError

    def reset_classifier(self, num_classes: int, class_names: list[str] | None = None, task: str | None = None,
                         class_splits: dict[str, int] | None = None) -> None:
        """Replace every classifier head with a fresh one for ``num_classes`` classes."""
        for name, head in self.heads().items():
            new = nn.Linear(head.in_features, num_classes, device=head.weight.device, dtype=head.weight.dtype)
            self._init_head(new)
            self._set_head(name, new)
        if task is None:
            task = "single" if self.cfg.task == "multihead" else self.cfg.task
        self.cfg = self.cfg.replace(num_classes=num_classes, class_names=class_names, class_splits=class_splits,
                                    task=task)

    def _set_head(self, name: str, head: nn.Linear) -> None:
        raise NotImplementedError

    def _init_head(self, head: nn.Linear) -> None:
        if self.cfg.head_zero_init:
            nn.init.zeros_(head.weight)
        else:
            nn.init.trunc_normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def init_weights(module: nn.Module) -> None:
    """ViT-style init: Xavier-uniform linears with zero bias (scenic), unit LayerNorms.

    The fused qkv projection is initialised as three separate (D, D) matrices, as scenic's
    separate query / key / value kernels are.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, Attention):
            for chunk in m.qkv.weight.data.chunk(3, dim=0):
                nn.init.xavier_uniform_(chunk)
