"""Where the fusion tokens look: attention maps of Zorro's fusion tokens and MBT's bottlenecks.

The attention module runs SDPA and never materialises its probabilities, so this recomputes
them for one layer from the layer's own input: a hook captures what enters the chosen block's
attention, and softmax(q k^T / sqrt(d)) is evaluated for the fusion (or bottleneck) query rows
over the modality tokens. The result is averaged over heads and over the fusion tokens and laid
out on each modality's patch grid: video (T', H', W'), spectrogram (T', F').
"""

from __future__ import annotations

import torch

from avfusion.errors import ConfigError
from avfusion.layers.attention import Attention


def _probs(attn: Attention, x: torch.Tensor, rows: slice) -> torch.Tensor:
    """Attention probabilities (B, heads, len(rows), L) of ``rows`` over every token of x, unmasked."""
    B, L, D = x.shape
    qkv = attn.qkv(x).reshape(B, L, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = qkv[0][:, :, rows], qkv[1]  # (B, h, n, hd), (B, h, L, hd)
    return (q @ k.transpose(-2, -1) * attn.head_dim ** -0.5).softmax(-1)


def _capture(module: Attention) -> tuple[list[torch.Tensor], torch.utils.hooks.RemovableHandle]:
    seen: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    return seen, handle


@torch.no_grad()
def fusion_attention(model: torch.nn.Module, inputs: dict[str, torch.Tensor], layer: int = -1) -> dict[str, torch.Tensor]:
    """Maps of where the fusion / bottleneck tokens attend, per modality, for the first clip.

    Returns ``{"video": (T', H', W'), "audio": (T', F')}`` (each sums to the attention mass the
    fusion tokens give that modality). Zorro (masked family): the fusion tokens read every token
    in one call. MBT (bottleneck fusion): the bottleneck tokens read each modality in that
    modality's own block call; ``layer`` must be a fusion layer.
    """
    cfg = model.cfg
    model.eval()
    inputs = {m: v[:1] for m, v in inputs.items()}
    grids = {m: model.tokens.grid(m) for m in inputs}
    out: dict[str, torch.Tensor] = {}
    if cfg.family == "masked":
        block = model.blocks[layer]
        seen, handle = _capture(block.attn)
        try:
            model(inputs)
        finally:
            handle.remove()
        x = seen[0]  # (1, L, D): [audio ; video ; fusion] for the present modalities
        nf = cfg.num_fusion_tokens
        p = _probs(block.attn, x, slice(x.shape[1] - nf, x.shape[1])).mean(dim=(1, 2))[0]  # (L,)
        start = 0
        for m in ("audio", "video"):
            if m in inputs:
                n = model.tokens.num_tokens(m)
                out[m] = p[start:start + n].reshape(grids[m])
                start += n
        return out
    if cfg.family == "streams" and cfg.fusion == "bottleneck":
        layer = layer % cfg.depth
        if layer < cfg.fusion_layer:
            raise ConfigError(f"layer {layer} is before the fusion layer {cfg.fusion_layer}: no bottlenecks there")
        nb = model.bottleneck.shape[1]
        for m in inputs:
            block = model._stack(m)[layer]
            seen, handle = _capture(block.attn)
            try:
                model(inputs)
            finally:
                handle.remove()
            x = seen[0]  # (1, 1 + N_m + n_b, D): [CLS ; modality ; bottleneck]
            p = _probs(block.attn, x, slice(x.shape[1] - nb, x.shape[1])).mean(dim=(1, 2))[0]
            out[m] = p[1:1 + model.tokens.embed[m].num_patches].reshape(grids[m])
        return out
    raise ConfigError(f"no fusion tokens to map in a {cfg.family}/{cfg.fusion} model")
