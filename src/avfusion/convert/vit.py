"""ImageNet ViT weights -> the transformer of an avfusion model (MBT's and Zorro's initialisation).

Accepted files (read by :mod:`avfusion.convert.safe_load`, never unpickled):

- timm state dicts, ``.safetensors`` or ``.pth`` (``blocks.0.attn.qkv.weight``, ``patch_embed.proj.weight``,
  ``pos_embed``, ``cls_token``, ``norm.weight``, ...), as on the Hugging Face hub under ``timm/``;
- Hugging Face ``transformers`` ViT state dicts (``vit.encoder.layer.0.attention.attention.query.weight``, ...);
- original ViT / AugReg ``.npz`` (``Transformer/encoderblock_0/MultiHeadDotProductAttention_1/...``)
  and big_vision ``.npz`` (``params/Transformer/encoderblock_0/MultiHeadDotProductAttention_0/...``,
  per-layer or scanned ``encoderblock``).

All are first brought to timm's layout (``*_to_timm``); then :func:`vit_to_avfusion` maps that onto a
model: blocks into every modality stream (or the one shared stack), the 2D patch kernel inflated to
the video tubelet (central frame as scenic's ``central_frame_initializer``, or averaged) and folded to
one channel for the spectrogram, position embeddings resampled (bilinear for the spectrogram grid;
for video resampled to the frame grid then tiled over time), CLS copied to each modality, and MBT's
bottleneck tokens started from the positions as scenic does. docs/convert.md has the details.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from avfusion.convert.keymaps import (
    ORIGINAL_VIT_BLOCK,
    SCENIC_BLOCK,
    FlaxBlockNames,
    ParamReader,
    conv2d,
    flax_block,
    fold_rgb_to_one_channel,
    inflate_2d_to_3d,
    t,
)
from avfusion.convert.safe_load import load_npz, load_state_dict
from avfusion.errors import ConfigError, InputError
from avfusion.layers.pos_embed import resample_pos_embed

__all__ = ["ViTInitReport", "ViTWeights", "init_from_vit", "load_vit_state_dict", "vit_to_avfusion"]

log = logging.getLogger(__name__)

_BLOCK_PARAMS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                 "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                 "mlp.fc2.weight", "mlp.fc2.bias")


@dataclass
class ViTWeights:
    """A ViT checkpoint in timm's key layout.

    ``num_prefix_tokens``: leading non-grid slots of ``pos_embed`` (1 with a CLS position; 0 for
    big_vision, which adds positions before prepending CLS). ``num_heads``: known only from flax
    (d, h, k) kernels; a timm / HF state dict does not record it.
    """

    state_dict: dict[str, torch.Tensor]
    num_prefix_tokens: int = 1
    num_heads: int | None = None


@dataclass
class ViTInitReport:
    """What an initialisation from a ViT did: which model tensors it set, which it left at their
    random initialisation (``missing``), and which ViT tensors had no place (``unexpected``)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"ViT initialisation from {self.source}: {len(self.loaded)} tensors loaded"]
        lines.append(f"  missing (kept at random init): {_summarise(self.missing) or 'none'}")
        lines.append(f"  unexpected (ViT tensors not used): {_summarise(self.unexpected) or 'none'}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _summarise(keys: list[str]) -> str:
    """Collapse per-layer names: blocks.video.3.norm1.weight -> blocks.video.*.norm1.weight (x12)."""
    groups: dict[str, int] = {}
    for k in keys:
        g = re.sub(r"\.\d+\.", ".*.", k)
        groups[g] = groups.get(g, 0) + 1
    return ", ".join(g if n == 1 else f"{g} (x{n})" for g, n in groups.items())


# -- reading: every format -> timm layout ------------------------------------------------------------
def load_vit_state_dict(path: str | os.PathLike) -> ViTWeights:
    """Any supported ViT checkpoint file, brought to timm's key layout."""
    p = str(path)
    if p.lower().endswith(".npz"):
        return flax_vit_to_timm(load_npz(p), p)
    sd = load_state_dict(p)
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if any(k.startswith(("vit.", "embeddings.", "encoder.layer.")) for k in sd):
        sd = hf_vit_to_timm(sd)
    if "pos_embed" not in sd or "patch_embed.proj.weight" not in sd:
        raise InputError(f"{p!r} is not a ViT state dict: no 'pos_embed' / 'patch_embed.proj.weight' "
                         f"(first keys: {sorted(sd)[:6]})")
    return ViTWeights(sd, _num_prefix_tokens(sd["pos_embed"]))


def _num_prefix_tokens(pos_embed: torch.Tensor) -> int:
    """Slots before the square grid of a (1, P + g*g, D) position embedding: none when the length is
    square (timm's no_embed_class), else the CLS position (and any register tokens')."""
    n = pos_embed.shape[1]
    return n - math.isqrt(n) ** 2


def hf_vit_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``transformers`` ViT keys -> timm keys (q, k, v Linears fused into qkv)."""
    sd = {k.removeprefix("vit."): v for k, v in sd.items()}
    out: dict[str, torch.Tensor] = {}
    simple = {
        "embeddings.cls_token": "cls_token", "embeddings.position_embeddings": "pos_embed",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
    }
    layer_map = {
        "layernorm_before": "norm1", "attention.output.dense": "attn.proj", "layernorm_after": "norm2",
        "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
    }
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if k in simple:
            out[simple[k]] = v
            continue
        m = re.match(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", k)
        if m:
            i, name, kind = int(m.group(1)), m.group(2), m.group(3)
            a = re.match(r"attention\.attention\.(query|key|value)$", name)
            if a:
                qkv.setdefault((i, kind), {})[a.group(1)] = v
                continue
            if name in layer_map:
                out[f"blocks.{i}.{layer_map[name]}.{kind}"] = v
                continue
        out[k] = v  # kept under its own name: reported as unexpected
    for (i, kind), parts in qkv.items():
        if len(parts) != 3:
            raise InputError(f"Hugging Face ViT layer {i}: attention {kind} has only {sorted(parts)} "
                             "of query, key, value")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def flax_vit_to_timm(arrays: dict[str, np.ndarray], source: str) -> ViTWeights:
    """Original ViT / AugReg or big_vision ``.npz`` -> timm keys."""
    flat = dict(arrays)
    for prefix in ("opt/target/", "params/"):
        if any(k.startswith(prefix) for k in flat):
            flat = {k.removeprefix(prefix): v for k, v in flat.items()}
    if any(k.startswith("Transformer/encoderblock/") for k in flat):  # big_vision scan: stacked layers
        stacked = {k: v for k, v in flat.items() if k.startswith("Transformer/encoderblock/")}
        depth = next(iter(stacked.values())).shape[0]
        for k, v in stacked.items():
            del flat[k]
            for i in range(depth):
                flat[k.replace("encoderblock/", f"encoderblock_{i}/")] = v[i]
    r = ParamReader(flat, f"ViT checkpoint {source!r}")
    original = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel" in flat
    names: FlaxBlockNames = ORIGINAL_VIT_BLOCK if original else SCENIC_BLOCK
    sd: dict[str, torch.Tensor] = {
        "patch_embed.proj.weight": conv2d(r.get("embedding/kernel", ndim=4)),  # (D, 3, p, p)
        "patch_embed.proj.bias": t(r.get("embedding/bias")),
        "norm.weight": t(r.get("Transformer/encoder_norm/scale")),
        "norm.bias": t(r.get("Transformer/encoder_norm/bias")),
    }
    n_prefix = 0
    if "cls" in r:
        sd["cls_token"] = t(r.get("cls", ndim=3))
    if "Transformer/posembed_input/pos_embedding" in r:  # original ViT: covers the CLS slot
        sd["pos_embed"] = t(r.get("Transformer/posembed_input/pos_embedding", ndim=3))
        n_prefix = 1 if "cls_token" in sd else 0
    else:  # big_vision adds positions before prepending CLS: the CLS slot has no position
        sd["pos_embed"] = t(r.get("pos_embedding", ndim=3))
    depth = len({m.group(1) for k in flat if (m := re.match(r"Transformer/encoderblock_(\d+)/", k))})
    heads = set()
    for i in range(depth):
        prefix = f"Transformer/encoderblock_{i}"
        heads.add(r.get(f"{prefix}/{names.attn}/query/kernel", ndim=3).shape[1])
        sd.update({f"blocks.{i}.{k}": v for k, v in flax_block(r, prefix, names).items()})
    if "head/kernel" in r:  # the ImageNet classifier: never used, but named as timm names it
        sd["head.weight"], sd["head.bias"] = t(r.get("head/kernel").T), t(r.get("head/bias"))
    for k in r.unused():  # pre-logits, ...: kept under their own names so the report can name them
        sd[k] = t(r.get(k))
    return ViTWeights(sd, n_prefix, heads.pop() if len(heads) == 1 else None)


# -- mapping onto a model ------------------------------------------------------------------------------
POS_RESAMPLE = ("scenic", "timm")


def resample_grid(grid: torch.Tensor, old: tuple[int, int], new: tuple[int, int], how: str = "scenic") -> torch.Tensor:
    """(1, old_h * old_w, D) -> (1, new_h * new_w, D), bilinear.

    'scenic': corner-aligned, which is what scenic's ``interpolate_positional_embeddings`` computes
    with ``scipy.ndimage.zoom(order=1)`` (output i reads input i * (old - 1) / (new - 1)).
    'timm': half-pixel centres (``align_corners=False``), as timm's ``resample_abs_pos_embed``.
    """
    if how == "timm":
        return resample_pos_embed(grid, old, new, 0)
    if how != "scenic":
        raise ConfigError(f"pos_resample must be one of {POS_RESAMPLE}, got {how!r}")
    if tuple(old) == tuple(new):
        return grid
    D = grid.shape[-1]
    g = grid.reshape(1, *old, D).permute(0, 3, 1, 2).double()  # (1, D, h, w); small, so in float64
    g = F.interpolate(g, size=tuple(new), mode="bilinear", align_corners=True)
    return g.permute(0, 2, 3, 1).reshape(1, -1, D).to(grid.dtype)


def _square_grid(n: int, what: str) -> tuple[int, int]:
    g = math.isqrt(n)
    if g * g != n:
        raise InputError(f"{what} has {n} patch positions, not a square grid; cannot infer its layout")
    return g, g


def vit_to_avfusion(
    weights: ViTWeights | dict[str, torch.Tensor],
    model: torch.nn.Module,
    inflate: str = "central",
    pos_resample: str = "scenic",
    source: str = "ViT",
) -> tuple[dict[str, torch.Tensor], ViTInitReport]:
    """The model tensors a timm-layout ViT (a state dict or :class:`ViTWeights`) initialises, and a report.

    Shapes must match exactly after the documented transforms (inflation, folding, position
    resampling); any other mismatch raises naming the tensor and both shapes.
    """
    cfg = model.cfg  # type: ignore[attr-defined]
    own = model.state_dict()
    report = ViTInitReport(source=source)
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}

    if not isinstance(weights, ViTWeights):
        sd = dict(weights)
        weights = ViTWeights(sd, _num_prefix_tokens(sd["pos_embed"]) if "pos_embed" in sd else 0)
    vit, num_prefix_tokens = weights.state_dict, weights.num_prefix_tokens
    if weights.num_heads is not None and weights.num_heads != cfg.num_heads:
        raise InputError(f"{source}: the ViT has {weights.num_heads} attention heads, the model {cfg.num_heads}: "
                         "its qkv weights would be split into heads differently")

    def put(key: str, value: torch.Tensor, src: str) -> None:
        if key not in own:
            raise AssertionError(f"ViT key map bug: model has no {key!r}")
        if tuple(own[key].shape) != tuple(value.shape):
            raise InputError(f"{source}: cannot initialise {key!r} {tuple(own[key].shape)} from ViT tensor {src!r} "
                             f"{tuple(vit[src].shape)} (mapped to shape {tuple(value.shape)})")
        out[key] = value.to(own[key].dtype)
        used.add(src)

    # transformer blocks -> every stack
    if cfg.family == "streams":
        stacks = ["blocks.shared"] if cfg.share_weights else ["blocks.audio", "blocks.video"]
    else:
        stacks = ["blocks"]
    for i in range(cfg.depth):
        for name in _BLOCK_PARAMS:
            src = f"blocks.{i}.{name}"
            if src in vit:
                for s in stacks:
                    put(f"{s}.{i}.{name}", vit[src], src)
    for name in ("norm.weight", "norm.bias"):
        if name in vit:
            put(name, vit[name], name)

    # patch embeddings: (D, 3, p, p) -> tubelet (D, 3, t, h, w) and spectrogram (D, 1, h, w)
    if "patch_embed.proj.weight" in vit:
        w2d = vit["patch_embed.proj.weight"]
        put("tokens.embed.video.proj.weight", inflate_2d_to_3d(w2d, cfg.tubelet[0], inflate), "patch_embed.proj.weight")
        put("tokens.embed.audio.proj.weight", fold_rgb_to_one_channel(w2d), "patch_embed.proj.weight")
        how = "central frame" if inflate == "central" else "averaged over frames"
        report.notes.append(f"patch kernel {tuple(w2d.shape[2:])} inflated to the {cfg.tubelet} tubelet ({how}) "
                            "and summed over RGB for the spectrogram")
    if "patch_embed.proj.bias" in vit:
        for m in ("video", "audio"):
            put(f"tokens.embed.{m}.proj.bias", vit["patch_embed.proj.bias"], "patch_embed.proj.bias")

    # position embeddings: (1, P + g*g, D) -> each modality's grid, plus the CLS slot if the model has one
    if "pos_embed" in vit:
        pe = vit["pos_embed"]
        n_patch = pe.shape[1] - num_prefix_tokens
        old = _square_grid(n_patch, "the ViT position embedding")
        grid = pe[:, num_prefix_tokens:].reshape(1, n_patch, -1)  # (1, g*g, D)
        # big_vision adds positions before prepending CLS: then the CLS slot starts at zero.
        cls_pos = pe[:, :1] if num_prefix_tokens else torch.zeros_like(pe[:, :1])
        has_cls = "tokens.cls_token.video" in own
        for m in ("video", "audio"):
            mgrid = model.tokens.grid(m)  # type: ignore[attr-defined]  # video (T', H', W'), audio (T', F')
            pos = resample_grid(grid, old, mgrid[-2:], pos_resample)  # (1, H'W' or T'F', D)
            if m == "video":  # tokens are t-major: the same spatial table for every tubelet time step
                pos = pos.repeat(1, mgrid[0], 1)
            if has_cls:
                pos = torch.cat([cls_pos, pos], dim=1)
            put(f"tokens.pos_embed.{m}", pos, "pos_embed")
        report.notes.append(
            f"position grid {old} resampled ({pos_resample}) to video {model.tokens.grid('video')[-2:]}, tiled over "  # type: ignore[attr-defined]
            f"{model.tokens.grid('video')[0]} time steps, and to spectrogram {model.tokens.grid('audio')}"  # type: ignore[attr-defined]
            + ("" if has_cls or not num_prefix_tokens else "; the ViT's CLS position is not used (no CLS token)")
            + ("; the ViT has no CLS position (big_vision), so the CLS slots start at zero"
               if has_cls and not num_prefix_tokens else ""))
        # scenic (init_posemb(..., 'bottleneck')) also starts MBT's bottleneck tokens from the ViT's
        # positions: [CLS position ; the grid resampled to n tokens as a gh x gw grid, gh = isqrt(n)].
        if "bottleneck" in own and cfg.bottleneck_extra_token:
            n = cfg.num_bottlenecks
            gh = max(math.isqrt(n), 1)
            if gh * (n // gh) == n:
                parts = [cls_pos] + ([resample_grid(grid, old, (gh, n // gh), pos_resample)] if n else [])
                put("bottleneck", torch.cat(parts, dim=1), "pos_embed")
                report.notes.append(f"bottleneck tokens start from the ViT's CLS position and its grid resampled to "
                                    f"{gh} x {n // gh}, as scenic does")

    if "cls_token" in vit and "tokens.cls_token.video" in own:
        for m in ("video", "audio"):
            put(f"tokens.cls_token.{m}", vit["cls_token"], "cls_token")

    report.loaded = sorted(out)
    report.missing = [k for k in own if k not in out]
    report.unexpected = sorted(k for k in vit if k not in used)
    return out, report


def init_from_vit(model: torch.nn.Module, path: str | os.PathLike, inflate: str = "central",
                  pos_resample: str = "scenic") -> ViTInitReport:
    """Initialise ``model``'s transformer from an ImageNet ViT checkpoint, in place; logs and
    returns the report of loaded, missing and unexpected tensors.

    ``inflate``: 'central' (scenic's default) or 'average' tubelet inflation.
    ``pos_resample``: 'scenic' (corner-aligned bilinear, scipy.ndimage.zoom(order=1) as in scenic's
    MBT) or 'timm' (half-pixel bilinear, align_corners=False, as timm / big_vision resize).
    """
    values, report = vit_to_avfusion(load_vit_state_dict(path), model, inflate, pos_resample,
                                     source=os.fspath(path))
    with torch.no_grad():
        own = model.state_dict()  # shares storage with the parameters
        for k, v in values.items():
            own[k].copy_(v)
    # Unused ViT tensors (its classifier, at least) are expected; say which, loudly enough to see.
    log.warning("%s", report)
    return report
