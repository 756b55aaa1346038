"""The "streams" family: MBT and the fusion schemes of its paper (DESIGN.md section 3).

Each modality has its own transformer stack (or one shared stack with ``share_weights``) and a
CLS token. Layers before ``fusion_layer`` are unimodal; from it on the streams meet by

- ``bottleneck`` (MBT): each modality's block runs on [own tokens ; bottleneck tokens]; the next
  bottleneck is the mean over modalities of the updated bottleneck tokens;
- ``xattn`` (scenic's "vanilla" mid fusion): each modality's block runs on [other ; own] tokens
  and keeps its own;
- ``concat`` (shared weights): all tokens are concatenated once and attend to all. With
  ``fusion_layer = 0`` this is early fusion.

``fusion_layer = depth`` is late fusion. Heads follow scenic: one shared classifier on each
modality's CLS token; ``logits`` is the mean of the per-modality logits, and training averages
the per-modality losses.

Unimodal models (``modalities=('audio',)`` or ``('video',)``) have one stream and one head: a
plain ViT on that modality (MBT's audio-only / video-only baselines).

Missing modality: the present stream runs unimodally through every layer (no bottleneck, no
cross-attention), as scenic does with ``test_with_bottlenecks=False``; ``logits`` is then that
stream's head alone. The run says so in ``ModelOutput.notes``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from avfusion.layers.block import Block, drop_path_rates
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


class StreamFusion(AVModel):
    """MBT and its paper's schemes (family ``streams``): per-modality (or shared) stacks, CLS pooling."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        if cfg.family != "streams":
            raise ValueError(f"StreamFusion builds family 'streams', got {cfg.family!r}")
        D = cfg.embed_dim
        self.tokens = make_tokenizer(cfg, use_cls=True)
        dpr = drop_path_rates(cfg.depth, cfg.drop_path_rate)

        def stack() -> nn.ModuleList:
            return nn.ModuleList(
                Block(D, cfg.num_heads, cfg.mlp_dim, cfg.qkv_bias, cfg.ln_eps, cfg.gelu,
                      cfg.drop_rate, cfg.attn_drop_rate, dpr[i], cfg.attn_impl)
                for i in range(cfg.depth)
            )

        stacks = ("shared",) if cfg.share_weights else cfg.modalities
        self.blocks = nn.ModuleDict({name: stack() for name in stacks})
        if cfg.fusion == "bottleneck" and cfg.fusion_layer < cfg.depth and len(cfg.modalities) == 2:  # late fusion has none
            n = cfg.num_bottlenecks + int(cfg.bottleneck_extra_token)
            self.bottleneck = nn.Parameter(torch.randn(1, n, D) * 0.02)  # no position embedding
        else:
            self.register_parameter("bottleneck", None)
        self.norm = nn.LayerNorm(D, eps=cfg.ln_eps)  # scenic's encoder_norm, shared by modalities
        self.head = Linear(D, cfg.num_classes)  # one classifier shared by both modalities
        init_weights(self)
        self._init_head(self.head)

    # -- surface ---------------------------------------------------------------------------
    def heads(self) -> dict[str, nn.Linear]:
        return {"head": self.head}

    def _set_head(self, name: str, head: nn.Linear) -> None:
        self.head = head

    def _stack(self, modality: str) -> nn.ModuleList:
        return self.blocks["shared" if self.cfg.share_weights else modality]

    def _no_decay_params(self) -> dict[str, Iterable[nn.Parameter]]:
        return {
            "pos_embed": self.tokens.pos_embed.values(),
            "cls_token": self.tokens.cls_token.values(),
            "bottleneck": [] if self.bottleneck is None else [self.bottleneck],
        }

    # -- forward ---------------------------------------------------------------------------
    def forward_features(self, inputs: dict[str, torch.Tensor]) -> tuple[Tokens, list[str]]:
        """Encoder + final norm -> [audio CLS ; audio ; video CLS ; video (; bottleneck)] tokens
        (B, L, D) with their layout, and notes."""
        cfg = self.cfg
        present = present_modalities(inputs, cfg.modalities)
        notes: list[str] = []
        ignored = [m for m in MODALITIES if inputs.get(m) is not None and m not in cfg.modalities]
        if ignored:
            notes.append(f"{ignored[0]} given but the model has only a {cfg.modalities[0]} stream: {ignored[0]} ignored")
        x = {m: self.tokens(m, inputs[m]) for m in present}  # m -> (B, 1 + N_m, D)
        fused = len(present) == 2 and cfg.fusion_layer < cfg.depth
        if fused and cfg.fusion == "bottleneck" and not (self.training or cfg.test_with_bottlenecks):
            fused = False
            notes.append("test_with_bottlenecks=False: streams ran unimodally in eval mode, as scenic does")
        if len(present) == 1 and len(cfg.modalities) == 2:
            absent = next(m for m in MODALITIES if m not in present)
            notes.append(
                f"{absent} absent: the {present[0]} stream ran unimodally through all {cfg.depth} layers "
                f"(no {cfg.fusion} fusion, as scenic's test_with_bottlenecks=False); logits = {present[0]} head"
            )
        B = next(iter(x.values())).shape[0]
        bottleneck = self.bottleneck.expand(B, -1, -1) if fused and cfg.fusion == "bottleneck" else None
        combined: torch.Tensor | None = None  # concat fusion: all tokens in one sequence

        for layer in range(cfg.depth):
            if not fused or layer < cfg.fusion_layer:
                for m in present:
                    x[m] = self._run_block(self._stack(m)[layer], x[m])
            elif cfg.fusion == "bottleneck":
                updates = []
                for m in present:
                    n = x[m].shape[1]
                    y = self._run_block(self._stack(m)[layer], torch.cat([x[m], bottleneck], dim=1))
                    x[m], b = y[:, :n], y[:, n:]
                    updates.append(b)
                bottleneck = torch.stack(updates, dim=-1).mean(dim=-1)  # (B, n_b, D)
            elif cfg.fusion == "xattn":
                new = {}
                for m in present:
                    other = x["video" if m == "audio" else "audio"]
                    n = x[m].shape[1]
                    y = self._run_block(self._stack(m)[layer], torch.cat([other, x[m]], dim=1))
                    new[m] = y[:, -n:]  # keep own tokens
                x = new
            else:  # concat, one shared stack
                if combined is None:
                    combined = torch.cat([x[m] for m in present], dim=1)
                combined = self._run_block(self.blocks["shared"][layer], combined)

        # One sequence: each present stream's [CLS ; patches] (concat fusion already is that), then
        # the final bottleneck when the streams met through one.
        x_all = combined if combined is not None else torch.cat(
            [x[m] for m in present] + ([bottleneck] if bottleneck is not None else []), dim=1)  # (B, L, D)
        groups = lay_out([g for m in present for g in ((f"{m}_cls", TokenType.CLS, 1),
                                                        (m, MODALITY_TYPES[m], self.tokens.num_tokens(m) - 1))]
                         + [("bottleneck", TokenType.BOTTLENECK, 0 if bottleneck is None else bottleneck.shape[1])])
        # scenic's encoder_norm: one LayerNorm shared by the modalities, applied per token.
        grids = {m: tuple(self.tokens.grid(m)) for m in present}
        return Tokens(self.norm(x_all), groups, present, grids), notes

    def _pool(self, x: Tokens) -> dict[str, torch.Tensor]:
        """Each present modality's CLS token -> (B, D)."""
        return {m: x.x[:, x.groups[f"{m}_cls"].start] for m in x.present}

    def _classify(self, feats: dict[str, torch.Tensor],
                  present: tuple[str, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outputs = {m: self.head(f) for m, f in feats.items()}  # m -> (B, C), one shared classifier
        logits = torch.stack(list(outputs.values()), dim=0).mean(dim=0)
        return logits, outputs
