"""Where the fusion tokens look: attention maps of Zorro's fusion tokens and MBT's bottlenecks.

The chosen block's attention module runs its reference path with explicit probabilities and
keeps them (``avfusion.layers.attention.keep_attention``), so a map is softmax(q k^T / sqrt(d))
under the mask that layer actually used: before ``fusion_layer`` Zorro's fusion tokens read only
fusion tokens (their maps over the modalities are zero), from it on the routing rule's keys. The
fusion (or bottleneck) query rows are averaged over heads and over the fusion tokens and laid out
on each modality's patch grid: video (T', H', W'), spectrogram (T', F').
"""

from __future__ import annotations

import torch

from avfusion.errors import ConfigError
from avfusion.layers.attention import keep_attention


@torch.no_grad()
def fusion_attention(model: torch.nn.Module, inputs: dict[str, torch.Tensor],
                     layer: int = -1) -> dict[str, torch.Tensor]:
    """Maps of where the fusion / bottleneck tokens attend, per present modality, for the first clip.

    Returns ``{"video": (T', H', W'), "audio": (T', F')}``: the attention mass the fusion tokens
    give each patch token (with the mass on the other keys the fusion tokens read, their own
    included, it sums to 1). Zorro (masked family): the fusion tokens read their allowed keys in
    one call. MBT (bottleneck fusion): the bottleneck tokens read each modality in that
    modality's own block call; ``layer`` must be a fusion layer and both modalities given.
    A model without fusion or bottleneck tokens has nothing to map: ConfigError.
    """
    cfg = model.cfg
    model.eval()
    inputs = {m: v[:1] for m, v in inputs.items() if v is not None}
    if cfg.family == "masked":
        if cfg.num_fusion_tokens == 0:
            raise ConfigError(f"model {cfg.name!r} has no fusion tokens (num_fusion_tokens=0): nothing to map")
        attn = model.blocks[layer].attn
        with keep_attention(attn):
            tokens, _ = model.forward_features(inputs)
        probs = attn.kept[0][0]  # (h, L, L): every block of this family sees the layout of `tokens`
        fusion = tokens.groups["fusion"]
        p = probs[:, fusion.start:fusion.stop].mean(dim=(0, 1))  # (L,) mean over heads and fusion tokens
        return {m: p[tokens.groups[m].start:tokens.groups[m].stop].reshape(tokens.grids[m]) for m in tokens.present}
    if cfg.family == "streams" and cfg.fusion == "bottleneck" and model.bottleneck is not None:
        layer = layer % cfg.depth
        if layer < cfg.fusion_layer:
            raise ConfigError(f"layer {layer} is before the fusion layer {cfg.fusion_layer}: no bottlenecks there")
        present = tuple(m for m in cfg.modalities if m in inputs)
        attns = {m: model._stack(m)[layer].attn for m in present}  # one module twice with shared weights
        with keep_attention(*{id(a): a for a in attns.values()}.values()):
            tokens, _ = model.forward_features(inputs)
        if "bottleneck" not in tokens.groups:
            raise ConfigError("the streams ran without bottlenecks (one modality given, or test_with_bottlenecks="
                              "False in eval mode): nothing to map")
        nb = tokens.groups["bottleneck"].stop - tokens.groups["bottleneck"].start
        calls = {id(a): 0 for a in attns.values()}
        out = {}
        for m in present:  # the streams run their block in `present` order
            a = attns[m]
            probs = a.kept[calls[id(a)]][0]  # (h, 1 + N_m + n_b, 1 + N_m + n_b): [CLS ; modality ; bottleneck]
            calls[id(a)] += 1
            n = tokens.groups[m].stop - tokens.groups[m].start
            p = probs[:, -nb:].mean(dim=(0, 1))  # (1 + N_m + n_b,)
            out[m] = p[1:1 + n].reshape(tokens.grids[m])
        return out
    raise ConfigError(f"no fusion tokens to map in a {cfg.family}/{cfg.fusion} model "
                      "(avfusion.layers.attention.keep_attention gives any block's probabilities)")
