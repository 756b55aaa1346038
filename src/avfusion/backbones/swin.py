"""Zorro-Swin: Zorro's routing on a Swin-style hierarchical backbone (docs/zorro_swin_hip.md).

Each modality keeps its own token grid: video (T', H', W') with 3D windows, the spectrogram
(T', F') with 2D windows. Window attention and patch merging run per grid, so a modality token
only ever reads tokens of its own modality, and never a fusion token. The few fusion tokens are
a separate group that, in every block, reads the token types the routing rule allows it
(``RULES['zorro']``: every modality token and the fusion tokens). All token groups share one set
of block weights (qkv, projection, MLP, norms), as Zorro-ViT's single stack does; the token
set-up and the four-output readout are every Zorro model's (models/zorro.py).

Tokens travel between blocks as one flat sequence (B, L, C) laid out [audio ; video ; fusion]
(the same layout as fusion/masked.py), so the reference path is exactly DESIGN.md's: one SDPA
call over all L tokens with a dense (L, L) boolean mask = the routing rule AND same-window.
The fast path ("auto") partitions each grid into (cyclically shifted) windows and runs the
fusion queries as one more call over their allowed keys; tests/backbones check that both agree.
Both read the routing from the same :class:`TokenMask` (``RULES[cfg.fusion]``): a grid's
queries must read only their own type (windows never cross modalities), which the layout checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from avfusion.layers.attention import Attention, reference_attend
from avfusion.layers.block import DropPath, Mlp, drop_path_rates
from avfusion.layers.linear import Linear
from avfusion.layers.masks import RULES, Rule, Segment, TokenMask, TokenType, segments_of, self_mask
from avfusion.layers.windows import Grid, clamp_window, stage_grids, window_ids, window_partition, window_reverse
from avfusion.core.base import MODALITY_TYPES, Tokens, lay_out
from avfusion.core.config import ModelConfig
from avfusion.core.zorro import ZorroModel

__all__ = ["ZorroSwin", "SwinBlock", "SwinLayout", "build_layout", "clamp_window", "window_ids",
           "window_partition", "window_reverse"]


@dataclass
class SwinLayout:
    """Where each token group sits in the flat sequence, and the masks its blocks need.

    ``routing`` says which token types each query group reads (from ``RULES``); ``windows[shifted][type]``
    = (window, shift) of each grid; ``region[shifted][type]`` = (B * nW, 1, n, n) mask for shifted
    windows (None when nothing is shifted); :meth:`dense` = (L, L) reference mask, built on first use.
    """

    segments: tuple[Segment, ...]
    grids: dict[TokenType, Grid]
    windows: dict[bool, dict[TokenType, tuple[Grid, Grid]]]
    routing: TokenMask
    region: dict[bool, dict[TokenType, torch.Tensor | None]]
    _dense: dict[tuple[bool, str], torch.Tensor] = field(default_factory=dict)

    def dense(self, shifted: bool, device: torch.device | str | None) -> torch.Tensor:
        """(L, L) bool reference mask: the routing rule AND, for grid queries, the same window."""
        key = (shifted, str(device))
        if key not in self._dense:
            self._dense[key] = _dense_mask(self, shifted, device)
        return self._dense[key]


def build_layout(segments: tuple[Segment, ...], grids: dict[TokenType, Grid],
                 windows: dict[TokenType, Grid], batch: int, impl: str,
                 device: torch.device | str | None, *, rule: Rule) -> SwinLayout:
    """The windows of one stage for plain and shifted blocks, with the masks ``impl`` needs."""
    routing = self_mask(segments, rule)
    for seg in segments:  # windows partition one grid: a grid's queries may read their own type only
        if seg.type in grids and set(rule.get(seg.type, ())) != {seg.type}:
            raise ValueError(f"Swin windows keep each modality on its own grid, but the routing rule lets "
                             f"{seg.type.name.lower()} tokens read {sorted(t.name.lower() for t in rule[seg.type])}")
    geo = {shifted: {t: clamp_window(g, windows[t], shifted) for t, g in grids.items()} for shifted in (False, True)}
    region: dict[bool, dict[TokenType, torch.Tensor | None]] = {False: {}, True: {}}
    layout = SwinLayout(segments, grids, geo, routing, region)
    for shifted, per_type in geo.items():
        if impl == "dense":
            layout.dense(shifted, device)
        else:
            region[shifted] = {t: _region_mask(grids[t], win, shift, batch, device)
                               for t, (win, shift) in per_type.items()}
    return layout


def _dense_mask(layout: SwinLayout, shifted: bool, device: torch.device | str | None) -> torch.Tensor:
    """(L, L) reference mask: routing between types AND, for grid (modality) queries, same window."""
    routing = layout.routing.dense(device)  # (L, L)
    ids = torch.full((routing.shape[0],), -1, dtype=torch.long, device=device)  # window id per token
    global_q = torch.zeros(routing.shape[0], dtype=torch.bool, device=device)  # queries without a grid
    offset = 0
    for seg in layout.segments:
        if seg.type not in layout.grids:
            global_q[seg.start:seg.stop] = True
            continue
        grid = layout.grids[seg.type]
        win, shift = layout.windows[shifted][seg.type]
        ids[seg.start:seg.stop] = window_ids(grid, win, shift, device) + offset
        offset += math.prod(g // w + 1 for g, w in zip(grid, win))  # ids never collide
    return routing & ((ids[:, None] == ids[None, :]) | global_q[:, None])


def _region_mask(grid: Grid, win: Grid, shift: Grid, batch: int,
                 device: torch.device | str | None) -> torch.Tensor | None:
    """(B * nW, 1, n, n) mask of the rolled windows (Swin's region mask); None without a shift.

    The batch is repeated into the mask because SDPA needs 4D inputs for FlopCounterMode.
    """
    if not any(shift):
        return None
    ids = window_ids(grid, win, shift, device).view(1, *grid, 1)
    ids = window_partition(ids.roll([-s for s in shift], dims=tuple(range(1, len(grid) + 1))), win)[..., 0]
    mask = ids[:, :, None] == ids[:, None, :]  # (nW, n, n): same region of the rolled window
    return mask.repeat(batch, 1, 1).unsqueeze(1)


# -- blocks -----------------------------------------------------------------------------------
class SwinBlock(nn.Module):
    """Pre-LN block over [audio ; video ; fusion]: window attention per modality grid, the fusion
    queries over the keys the routing allows, one MLP; every group uses the same weights."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, shifted: bool, cfg: ModelConfig,
                 drop_path: float = 0.0):
        super().__init__()
        self.shifted = shifted
        self.impl = cfg.attn_impl
        self.norm1 = nn.LayerNorm(dim, eps=cfg.ln_eps)
        # Attention keeps timm's parameter layout (qkv, proj); its windowed core is below.
        self.attn = Attention(dim, num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate, cfg.attn_impl)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.ln_eps)
        self.mlp = Mlp(dim, mlp_dim, cfg.gelu, cfg.drop_rate)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, layout: SwinLayout) -> torch.Tensor:
        x = x + self.drop_path1(self._attention(self.norm1(x), layout))
        return x + self.drop_path2(self.mlp(self.norm2(x)))

    def _attention(self, x: torch.Tensor, layout: SwinLayout) -> torch.Tensor:
        B, L, C = x.shape
        h, hd = self.attn.num_heads, self.attn.head_dim
        drop = self.attn.attn_drop if self.training else 0.0
        qkv = self.attn.qkv(x)  # (B, L, 3C)
        if self.impl == "dense" or self.attn.keep:  # the reference: every token, one call, the full (L, L) mask
            q, k, v = qkv.reshape(B, L, 3, h, hd).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, L, hd)
            mask = layout.dense(self.shifted, x.device)  # (L, L)
            if self.attn.keep:  # attention maps requested (layers.attention.keep_attention)
                out, probs = reference_attend(q, k, v, mask, drop)
                self.attn.kept.append(probs.detach())
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
            return self.attn.proj_drop(self.attn.proj(out.transpose(1, 2).reshape(B, L, C)))
        # split (not slice) so the backward pass concatenates gradients instead of zero-filling.
        q_all, kv_all = qkv.split([C, 2 * C], dim=-1)  # (B, L, C), (B, L, 2C)
        lengths = [seg.stop - seg.start for seg in layout.segments]
        outs = []
        for seg, block, q_seg, kv_seg in zip(layout.segments, layout.routing.blocks,
                                             q_all.split(lengths, 1), kv_all.split(lengths, 1)):
            n = seg.stop - seg.start
            if seg.type not in layout.grids:
                # Queries without a grid (the fusion tokens) read the key groups the rule allows,
                # unwindowed (Zorro: every present token).
                q = q_seg.reshape(B, n, h, hd).transpose(1, 2)  # (B, h, n_f, hd)
                kv = kv_all if block.k == (slice(0, L),) else torch.cat([kv_all[:, s] for s in block.k], dim=1)
                k, v = kv.reshape(B, -1, 2, h, hd).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, L_k, hd)
                o = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # (B, h, n_f, hd)
                outs.append(o.transpose(1, 2).reshape(B, n, C))
                continue
            # A grid's queries read their own window (build_layout checked the rule allows no more).
            grid = layout.grids[seg.type]
            win, shift = layout.windows[self.shifted][seg.type]
            dims = tuple(range(1, len(grid) + 1))
            q_seg, kv_seg = q_seg.reshape(B, *grid, C), kv_seg.reshape(B, *grid, 2 * C)
            if any(shift):
                q_seg, kv_seg = q_seg.roll([-s for s in shift], dims=dims), kv_seg.roll([-s for s in shift], dims=dims)
            qw, kvw = window_partition(q_seg, win), window_partition(kv_seg, win)  # (B * nW, n_w, C | 2C)
            Bw, nw = qw.shape[:2]
            q = qw.reshape(Bw, nw, h, hd).transpose(1, 2)  # (B * nW, h, n_w, hd)
            k, v = kvw.reshape(Bw, nw, 2, h, hd).permute(2, 0, 3, 1, 4).unbind(0)  # each (B * nW, h, n_w, hd)
            o = F.scaled_dot_product_attention(  # (B * nW, h, n_w, hd); keys: own window only
                q, k, v, attn_mask=layout.region[self.shifted][seg.type], dropout_p=drop)
            o = window_reverse(o.transpose(1, 2).reshape(Bw, nw, C), grid, win)  # (B, *grid, C)
            if any(shift):
                o = o.roll(list(shift), dims=dims)
            outs.append(o.reshape(B, n, C))
        return self.attn.proj_drop(self.attn.proj(torch.cat(outs, dim=1)))  # (B, L, C)


class PatchMerging(nn.Module):
    """Merge 2 x 2 neighbours on a grid's last two axes: (B, ..., H, W, C) -> (B, ..., H/2, W/2, 2C).

    Video merges space only (Video Swin keeps time), the spectrogram merges time and mel.
    """

    def __init__(self, dim: int, ln_eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=ln_eps)
        self.reduction = Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *lead, H, W, C = x.shape
        x = x.reshape(*lead, H // 2, 2, W // 2, 2, C).transpose(-4, -3)  # (..., H/2, W/2, 2, 2, C)
        return self.reduction(self.norm(x.reshape(*lead, H // 2, W // 2, 4 * C)))


class SwinStage(nn.Module):
    """Optional patch merging (modality grids; fusion tokens get a width projection), then blocks."""

    def __init__(self, in_dim: int, dim: int, depth: int, head_dim: int, mlp_ratio: float,
                 cfg: ModelConfig, dpr: list[float]):
        super().__init__()
        self.merge = PatchMerging(in_dim, cfg.ln_eps) if in_dim != dim else None
        # Fusion tokens have no grid to merge: they are widened by their own norm + linear map.
        self.fusion_merge = (nn.Sequential(nn.LayerNorm(in_dim, eps=cfg.ln_eps), Linear(in_dim, dim, bias=False))
                             if in_dim != dim else None)
        self.blocks = nn.ModuleList(
            SwinBlock(dim, dim // head_dim, int(dim * mlp_ratio), i % 2 == 1, cfg, dpr[i]) for i in range(depth)
        )


# -- the model --------------------------------------------------------------------------------
class ZorroSwin(ZorroModel):
    """Zorro-Swin (family ``swin``). Stage s has width embed_dim * 2**s and depths[s] blocks;
    head width embed_dim / num_heads is kept, so heads double with width (Swin's habit)."""

    backbone = "Zorro-Swin"

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, "swin")
        assert cfg.depths is not None  # validated by ModelConfig
        C0 = cfg.embed_dim
        head_dim, mlp_ratio = C0 // cfg.num_heads, cfg.mlp_dim / C0
        self._build_tokens(fusion_tokens=True)  # per-modality patches + learned positions, fusion tokens
        self.rule = RULES[cfg.fusion]
        self.windows = {TokenType.AUDIO: tuple(cfg.spec_window), TokenType.VIDEO: tuple(cfg.window_size)}
        # Token grids per stage (ModelConfig.validate has checked they window and merge).
        grids = {MODALITY_TYPES[m]: tuple(self.tokens.grid(m)) for m in cfg.modalities}
        self.stage_grids: list[dict[TokenType, Grid]] = stage_grids(grids, self.windows, len(cfg.depths))
        dpr = drop_path_rates(cfg.depth, cfg.drop_path_rate)
        self.stages = nn.ModuleList()
        for s, depth in enumerate(cfg.depths):
            in_dim, dim = C0 * 2 ** max(s - 1, 0), C0 * 2 ** s
            self.stages.append(SwinStage(in_dim, dim, depth, head_dim, mlp_ratio, cfg,
                                         dpr[sum(cfg.depths[:s]):sum(cfg.depths[:s + 1])]))
        D = C0 * 2 ** (len(cfg.depths) - 1)
        self._build_readout_and_heads(D, D // head_dim, int(D * mlp_ratio))

    def forward_features(self, inputs: dict[str, torch.Tensor]) -> tuple[Tokens, list[str]]:
        """Inputs -> the last stage's [audio ; video ; fusion] tokens (B, L, D) after the final norm
        (modality tokens on their merged grids), and notes."""
        t = self.embed(inputs)  # (B, L, C0)
        x, segments = t.x, t.segments
        types = [MODALITY_TYPES[m] for m in t.present]
        B = x.shape[0]
        for stage, all_grids in zip(self.stages, self.stage_grids):
            grids = {k: all_grids[k] for k in types}
            if stage.merge is not None:
                x = self._merge(stage, x, segments, grids)
                segments = segments_of([s.type for s in segments], [math.prod(grids[s.type]) if s.type in grids
                                                                    else s.stop - s.start for s in segments])
            layout = build_layout(segments, grids, self.windows, B, self.cfg.attn_impl, x.device, rule=self.rule)
            for block in stage.blocks:
                x = self._run_block(block, x, layout)  # (B, L, C)
        groups = lay_out([(name, s.type, s.stop - s.start) for name, s in zip(t.groups, segments)])
        last = {m: self.stage_grids[-1][MODALITY_TYPES[m]] for m in t.present}
        return Tokens(self.norm(x), groups, t.present, last), self._missing_note(t.present)

    @staticmethod
    def _merge(stage: SwinStage, x: torch.Tensor, segments: tuple[Segment, ...],
               grids: dict[TokenType, Grid]) -> torch.Tensor:
        """Patch merging per modality grid (to this stage's grids) and widening of fusion tokens."""
        B, C = x.shape[0], x.shape[-1]
        out = []
        for seg, part in zip(segments, x.split([s.stop - s.start for s in segments], dim=1)):
            if seg.type == TokenType.FUSION:
                out.append(stage.fusion_merge(part))  # (B, n_f, 2C)
            else:
                g = grids[seg.type]
                prev = (*g[:-2], g[-2] * 2, g[-1] * 2)
                out.append(stage.merge(part.reshape(B, *prev, C)).reshape(B, -1, 2 * C))  # (B, N / 4, 2C)
        return torch.cat(out, dim=1)

