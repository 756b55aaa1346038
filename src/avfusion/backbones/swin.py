"""Zorro-Swin: Zorro's routing on a Swin-style hierarchical backbone (docs/zorro_swin_hip.md).

Each modality keeps its own token grid: video (T', H', W') with 3D windows, the spectrogram
(T', F') with 2D windows. Window attention and patch merging run per grid, so a modality token
only ever reads tokens of its own modality, and never a fusion token. The few fusion tokens are
a separate group that, in every block, attends globally to all modality tokens and to
themselves. All token groups share one set of block weights (qkv, projection, MLP, norms), as
Zorro-ViT's single stack does; the four-output readout is Zorro-ViT's (heads/readout.py).

Tokens travel between blocks as one flat sequence (B, L, C) laid out [audio ; video ; fusion]
(the same layout as fusion/masked.py), so the reference path is exactly DESIGN.md's: one SDPA
call over all L tokens with a dense (L, L) boolean mask = Zorro routing AND same-window.
The fast path ("auto") partitions each grid into (cyclically shifted) windows and runs the
fusion queries as one more call; tests/backbones check that both agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from avfusion.backbones.common import ZorroHeads, missing_note
from avfusion.errors import ConfigError
from avfusion.layers.attention import Attention
from avfusion.layers.block import DropPath, Mlp, drop_path_rates
from avfusion.layers.masks import RULES, Segment, TokenType, segments_of, self_mask
from avfusion.layers.tokenizer import ModalityTokenizer
from avfusion.models.base import present_modalities
from avfusion.models.config import ModelConfig

_TYPE = {"audio": TokenType.AUDIO, "video": TokenType.VIDEO}
Grid = tuple[int, ...]


# -- window geometry ----------------------------------------------------------------------------
def clamp_window(grid: Grid, window: Grid, shifted: bool) -> tuple[Grid, Grid]:
    """Per axis, as Video Swin: a window no larger than the grid, and no shift where it covers it."""
    win = tuple(min(w, g) for w, g in zip(window, grid, strict=True))
    shift = tuple(w // 2 if shifted and g > w else 0 for w, g in zip(window, grid, strict=True))
    return win, shift


def window_partition(x: torch.Tensor, window: Grid) -> torch.Tensor:
    """(B, *grid, C) -> (B * nW, n, C): non-overlapping windows, n = prod(window)."""
    B, *grid, C = x.shape
    d = len(grid)
    split = [s for g, w in zip(grid, window) for s in (g // w, w)]
    x = x.reshape(B, *split, C)  # (B, g0/w0, w0, g1/w1, w1, ..., C)
    x = x.permute(0, *range(1, 2 * d, 2), *range(2, 2 * d + 1, 2), 2 * d + 1)
    return x.reshape(-1, math.prod(window), C)


def window_reverse(x: torch.Tensor, grid: Grid, window: Grid) -> torch.Tensor:
    """(B * nW, n, C) -> (B, *grid, C), the inverse of :func:`window_partition`."""
    d, C = len(grid), x.shape[-1]
    counts = [g // w for g, w in zip(grid, window)]
    x = x.reshape(-1, *counts, *window, C)  # (B, g0/w0, ..., w0, ..., C)
    x = x.permute(0, *(i for a in range(1, d + 1) for i in (a, a + d)), 2 * d + 1)
    return x.reshape(-1, *grid, C)


def window_ids(grid: Grid, window: Grid, shift: Grid, device: torch.device | str | None) -> torch.Tensor:
    """(N,) id per token (flat grid order): two tokens share a window iff their ids are equal.

    A Swin shift by ``s`` moves the window boundaries to s, s + w, s + 2w, ...; the cyclic roll
    plus region mask of the fast path computes exactly this partition, so the same ids give the
    region masks of the fast path and the dense mask of the reference path.
    """
    ids = torch.zeros((), dtype=torch.long, device=device)
    for axis, (g, w, s) in enumerate(zip(grid, window, shift)):
        p = torch.arange(g, device=device)
        a = torch.div(p - s, w, rounding_mode="floor") + 1  # (g,) in [0, g / w]
        ids = ids.unsqueeze(-1) * (g // w + 1) + a.view(*([1] * axis), g)
    return ids.reshape(-1)


@dataclass
class SwinLayout:
    """Where each token group sits in the flat sequence, and the masks its blocks need.

    ``windows[shifted][type]`` = (window, shift); ``region[shifted][type]`` = (B * nW, 1, n, n) mask
    for shifted windows (None when nothing is shifted); ``dense[shifted]`` = (L, L) reference mask.
    """

    segments: tuple[Segment, ...]
    grids: dict[TokenType, Grid]
    windows: dict[bool, dict[TokenType, tuple[Grid, Grid]]]
    region: dict[bool, dict[TokenType, torch.Tensor | None]]
    dense: dict[bool, torch.Tensor]


def build_layout(segments: tuple[Segment, ...], grids: dict[TokenType, Grid],
                 windows: dict[TokenType, Grid], batch: int, impl: str,
                 device: torch.device | str | None) -> SwinLayout:
    """The windows of one stage for plain and shifted blocks, with the masks ``impl`` needs."""
    geo = {shifted: {t: clamp_window(g, windows[t], shifted) for t, g in grids.items()} for shifted in (False, True)}
    region: dict[bool, dict[TokenType, torch.Tensor | None]] = {False: {}, True: {}}
    dense: dict[bool, torch.Tensor] = {}
    for shifted, per_type in geo.items():
        if impl == "dense":
            dense[shifted] = _dense_mask(segments, grids, per_type, device)
        else:
            region[shifted] = {t: _region_mask(grids[t], win, shift, batch, device)
                               for t, (win, shift) in per_type.items()}
    return SwinLayout(segments, grids, geo, region, dense)


def _dense_mask(segments: tuple[Segment, ...], grids: dict[TokenType, Grid],
                per_type: dict[TokenType, tuple[Grid, Grid]], device: torch.device | str | None) -> torch.Tensor:
    """(L, L) reference mask: Zorro routing between types AND, for modality queries, same window."""
    routing = self_mask(segments, RULES["zorro"]).dense(device)  # (L, L)
    ids = torch.full((routing.shape[0],), -1, dtype=torch.long, device=device)  # window id per token
    is_fusion = torch.zeros(routing.shape[0], dtype=torch.bool, device=device)
    offset = 0
    for seg in segments:
        if seg.type == TokenType.FUSION:
            is_fusion[seg.start:seg.stop] = True
            continue
        win, shift = per_type[seg.type]
        ids[seg.start:seg.stop] = window_ids(grids[seg.type], win, shift, device) + offset
        offset += math.prod(g // w + 1 for g, w in zip(grids[seg.type], win))  # ids never collide
    return routing & ((ids[:, None] == ids[None, :]) | is_fusion[:, None])


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
    """Pre-LN block over [audio ; video ; fusion]: window attention per modality grid, global
    attention for the fusion queries, one MLP; every group uses the same weights."""

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
        if self.impl == "dense":  # the reference: every token, one call, the full (L, L) mask
            q, k, v = qkv.reshape(B, L, 3, h, hd).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, L, hd)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=layout.dense[self.shifted], dropout_p=drop)
            return self.attn.proj_drop(self.attn.proj(out.transpose(1, 2).reshape(B, L, C)))
        # split (not slice) so the backward pass concatenates gradients instead of zero-filling.
        q_all, kv_all = qkv.split([C, 2 * C], dim=-1)  # (B, L, C), (B, L, 2C)
        lengths = [seg.stop - seg.start for seg in layout.segments]
        outs = []
        for seg, q_seg, kv_seg in zip(layout.segments, q_all.split(lengths, 1), kv_all.split(lengths, 1)):
            n = seg.stop - seg.start
            if seg.type == TokenType.FUSION:
                # Zorro: fusion queries read every present token (all modalities + fusion).
                q = q_seg.reshape(B, n, h, hd).transpose(1, 2)  # (B, h, n_f, hd)
                k, v = kv_all.reshape(B, L, 2, h, hd).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, L, hd)
                o = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # (B, h, n_f, hd)
                outs.append(o.transpose(1, 2).reshape(B, n, C))
                continue
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
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

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
        self.fusion_merge = (nn.Sequential(nn.LayerNorm(in_dim, eps=cfg.ln_eps), nn.Linear(in_dim, dim, bias=False))
                             if in_dim != dim else None)
        self.blocks = nn.ModuleList(
            SwinBlock(dim, dim // head_dim, int(dim * mlp_ratio), i % 2 == 1, cfg, dpr[i]) for i in range(depth)
        )


# -- the model --------------------------------------------------------------------------------
class ZorroSwin(ZorroHeads):
    """Zorro-Swin (family ``swin``). Stage s has width embed_dim * 2**s and depths[s] blocks;
    head width embed_dim / num_heads is kept, so heads double with width (Swin's habit)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, "swin")
        assert cfg.depths is not None  # validated by ModelConfig
        C0 = cfg.embed_dim
        head_dim, mlp_ratio = C0 // cfg.num_heads, cfg.mlp_dim / C0
        self.tokens = ModalityTokenizer(cfg, use_cls=False)  # per-modality patches + learned positions
        self.fusion_tokens = nn.Parameter(torch.randn(1, cfg.num_fusion_tokens, C0) * 0.02)
        self.windows = {TokenType.AUDIO: tuple(cfg.spec_window), TokenType.VIDEO: tuple(cfg.window_size)}
        # Token grids per stage (checked here, so a bad size fails at build time, not mid-forward).
        grids = {_TYPE[m]: tuple(self.tokens.grid(m)) for m in _TYPE}
        self.stage_grids: list[dict[TokenType, Grid]] = []
        dpr = drop_path_rates(cfg.depth, cfg.drop_path_rate)
        self.stages = nn.ModuleList()
        for s, depth in enumerate(cfg.depths):
            if s > 0:
                for t, g in grids.items():
                    if g[-1] % 2 or g[-2] % 2:
                        raise ConfigError(f"model config {cfg.name!r}: {t.name.lower()} grid {g} before stage {s} "
                                          "has an odd merged axis; patch merging needs even sizes")
                grids = {t: (*g[:-2], g[-2] // 2, g[-1] // 2) for t, g in grids.items()}
            for t, g in grids.items():
                win, _ = clamp_window(g, self.windows[t], False)
                if any(a % w for a, w in zip(g, win)):
                    raise ConfigError(f"model config {cfg.name!r}: {t.name.lower()} grid {g} at stage {s} is not "
                                      f"divisible by its window {win} (window_size / spec_window)")
            self.stage_grids.append(grids)
            in_dim, dim = C0 * 2 ** max(s - 1, 0), C0 * 2 ** s
            self.stages.append(SwinStage(in_dim, dim, depth, head_dim, mlp_ratio, cfg,
                                         dpr[sum(cfg.depths[:s]):sum(cfg.depths[:s + 1])]))
        D = C0 * 2 ** (len(cfg.depths) - 1)
        self._build_readout_and_heads(D, D // head_dim, int(D * mlp_ratio))

    def forward_features(self, inputs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        present = present_modalities(inputs)
        types = [_TYPE[m] for m in present]
        parts = [self.tokens(m, inputs[m]) for m in present]  # each (B, N_m, C0)
        B = parts[0].shape[0]
        parts.append(self.fusion_tokens.expand(B, -1, -1))  # (B, n_f, C0)
        x = torch.cat(parts, dim=1)  # (B, L, C0)
        segments = segments_of([*types, TokenType.FUSION], [p.shape[1] for p in parts])
        for stage, all_grids in zip(self.stages, self.stage_grids):
            grids = {t: all_grids[t] for t in types}
            if stage.merge is not None:
                x = self._merge(stage, x, segments, grids)
                segments = segments_of([s.type for s in segments], [math.prod(grids[s.type]) if s.type in grids
                                                                    else s.stop - s.start for s in segments])
            layout = build_layout(segments, grids, self.windows, B, self.cfg.attn_impl, x.device)
            for block in stage.blocks:
                x = self._run_block(block, x, layout)  # (B, L, C)
        feats = self.readout(self.norm(x), segments)  # output -> (B, D)
        return feats, missing_note(present, "Zorro-Swin")

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
