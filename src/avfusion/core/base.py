"""The surface every avfusion model shares (DESIGN.md section 1; timm's model surface).

- ``model(inputs) -> ModelOutput`` (logits, outputs, features, notes);
- ``forward_features(inputs) -> (Tokens, notes)``: the encoder's final tokens with their layout;
- ``forward_head(tokens, pre_logits=False)``: pooling (CLS tokens, or Zorro's readout) and the
  classifiers -> a ``ModelOutput``; ``pre_logits=True`` stops at the pooled features;
- ``no_weight_decay()`` / ``no_weight_decay_sets()``, ``reset_classifier``, ``set_grad_checkpointing``,
  ``example_inputs``, ``num_features``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, overload

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from avfusion.errors import InputError
from avfusion.layers.attention import Attention
from avfusion.layers.linear import Linear
from avfusion.layers.masks import Segment, TokenType
from avfusion.layers.tokenizer import ModalityTokenizer
from avfusion.core.config import MODALITIES, ModelConfig

# Token type of each modality's patch tokens.
MODALITY_TYPES: dict[str, TokenType] = {"audio": TokenType.AUDIO, "video": TokenType.VIDEO}


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


def lay_out(groups: Sequence[tuple[str, TokenType, int]]) -> dict[str, Segment]:
    """Named token groups placed one after another: name -> Segment(type, start, stop).

    Empty groups are left out (as :func:`avfusion.layers.masks.segments_of` drops them).
    """
    out, pos = {}, 0
    for name, kind, n in groups:
        if n > 0:
            if name in out:
                raise ValueError(f"token group {name!r} appears twice in one layout")
            out[name] = Segment(TokenType(kind), pos, pos + n)
            pos += n
    return out


@dataclass
class Tokens:
    """Tokens with their layout: what ``forward_features`` returns and ``forward_head`` reads.

    x:       (B, L, D) tokens, groups one after another (after the encoder's final norm when
             returned by ``forward_features``).
    groups:  name -> Segment (token type, positions [start, stop) in L), in sequence order.
             Names: "audio" / "video" (patch tokens, or a modality's latents in Zorro-HiP),
             "audio_cls" / "video_cls" (MBT), "bottleneck" (MBT), "fusion" (Zorro).
    present: the modalities given (and used), in canonical order.
    grids:   modality -> the grid its tokens lie on, row-major (video (T', H', W'), spectrogram
             (T', F'); after patch merging for Zorro-Swin); absent where they lie on none (latents).
    """

    x: torch.Tensor
    groups: dict[str, Segment]
    present: tuple[str, ...]
    grids: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The token-type layout of L, as the attention masks and Zorro's readout take it."""
        return tuple(self.groups.values())

    def type_ids(self) -> torch.Tensor:
        """(L,) long: the TokenType of every position."""
        ids = torch.empty(self.x.shape[1], dtype=torch.long, device=self.x.device)
        for seg in self.groups.values():
            ids[seg.start:seg.stop] = int(seg.type)
        return ids

    def __getitem__(self, name: str) -> torch.Tensor:
        """(B, n, D): the tokens of one group, e.g. ``tokens["video"]``."""
        seg = self.groups[name]
        return self.x[:, seg.start:seg.stop]


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
    sizes = [inputs[m].shape[0] for m in present]  # type: ignore[union-attr]
    if not all(isinstance(n, int) for n in sizes):  # symbolic sizes (torch.export, a dynamic batch)
        for n in sizes[1:]:
            torch._check(n == sizes[0], lambda: "audio and video batch sizes differ")
    elif len(set(sizes)) > 1:
        raise ValueError(f"audio and video batch sizes differ: {sorted(sizes)}")
    return present


def make_tokenizer(cfg: ModelConfig, use_cls: bool) -> ModalityTokenizer:
    """The per-modality patch embeddings and positions at the sizes ``cfg`` sets."""
    return ModalityTokenizer(cfg.embed_dim, cfg.modalities, use_cls=use_cls, spec_size=cfg.spec_size,
                             spec_patch=cfg.spec_patch, num_frames=cfg.num_frames, image_size=cfg.image_size,
                             tubelet=cfg.tubelet)


class AVModel(nn.Module):
    """Base class: the forward surface, example inputs, classifier reset, grad checkpointing,
    weight-decay sets.

    A family implements ``forward_features`` (inputs -> Tokens + notes), ``_pool`` (Tokens ->
    pooled features per output), ``_classify`` (pooled features -> logits, outputs), ``heads`` /
    ``_set_head``, and ``_no_decay_params`` (its learned embeddings, by kind).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.grad_checkpointing = False
        # Width of ModelOutput.features (hierarchical backbones end wider than embed_dim).
        self.num_features = cfg.embed_dim

    # -- forward surface ---------------------------------------------------------------------
    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        tokens, notes = self.forward_features(inputs)
        out = self.forward_head(tokens)
        out.notes = notes
        return out

    def forward_features(self, inputs: dict[str, torch.Tensor]) -> tuple[Tokens, list[str]]:
        """Inputs -> the encoder's final tokens (after its final norm) with their layout, and notes."""
        raise NotImplementedError

    @overload
    def forward_head(self, x: Tokens, pre_logits: Literal[False] = False) -> ModelOutput: ...

    @overload
    def forward_head(self, x: Tokens, pre_logits: Literal[True]) -> dict[str, torch.Tensor]: ...

    def forward_head(self, x: Tokens, pre_logits: bool = False) -> ModelOutput | dict[str, torch.Tensor]:
        """Pool ``x`` per output (name -> (B, D)); with ``pre_logits`` return that, else the
        classifiers' ModelOutput (logits, outputs, features = the pooled features; no notes)."""
        feats = self._pool(x)
        if pre_logits:
            return feats
        logits, outputs = self._classify(feats, x.present)
        return ModelOutput(logits=logits, outputs=outputs, features=feats)

    def _pool(self, x: Tokens) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _classify(self, feats: dict[str, torch.Tensor],
                  present: tuple[str, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

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

    def _no_decay_params(self) -> dict[str, Iterable[nn.Parameter]]:
        """The family's learned embeddings that must not be weight-decayed, by kind
        ("pos_embed", "cls_token", "bottleneck", "fusion_tokens", "readout_query", "latents")."""
        raise NotImplementedError

    def no_weight_decay_sets(self) -> dict[str, set[str]]:
        """Parameter names never weight-decayed, by kind: the family's learned embeddings
        (position embeddings, CLS / bottleneck / fusion tokens, readout queries, latents) and
        "1d": every other 1-D parameter (biases, norm weights). Every parameter not listed, i.e.
        every >= 2-D weight (linear layers, patch-embedding kernels), is decayed."""
        name_of = {id(p): n for n, p in self.named_parameters()}
        sets: dict[str, set[str]] = {}
        for kind, params in self._no_decay_params().items():
            names = {name_of[id(p)] for p in params}
            if names:
                sets[kind] = names
        listed = set().union(*sets.values())
        sets["1d"] = {n for n, p in self.named_parameters() if p.ndim <= 1 and n not in listed}
        return sets

    def no_weight_decay(self) -> set[str]:
        """Names of every parameter that is not weight-decayed (the union of :meth:`no_weight_decay_sets`)."""
        return set().union(*self.no_weight_decay_sets().values())

    def heads(self) -> dict[str, nn.Linear]:
        """The classifier layers (name -> Linear); overridden by each family."""
        raise NotImplementedError

    def reset_classifier(self, num_classes: int, class_names: list[str] | None = None, task: str | None = None,
                         class_splits: dict[str, int] | None = None) -> None:
        """Replace every classifier head with a fresh one for ``num_classes`` classes."""
        for name, head in self.heads().items():
            new = Linear(head.in_features, num_classes, device=head.weight.device, dtype=head.weight.dtype)
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
