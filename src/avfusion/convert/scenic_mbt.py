"""Official scenic MBT checkpoints (flax msgpack) -> avfusion ``StreamFusion`` models.

Every size is read from parameter shapes (``infer_layout``); only the fusion layer is behaviour
that shapes cannot show, and input sizes appear only through the position-embedding lengths, so
they come from arguments (defaults: MBT's AudioSet setting) and are checked against those lengths.

Official layout and semantics: docs/convert.md, and ``tests/fixtures/scenic_mbt/README.md`` beside
the official outputs the parity tests compare with. Mapping onto avfusion:

====================================================  =================================================
scenic (PARAMS tree)                                  avfusion state dict
====================================================  =================================================
embedding/kernel (ft, fh, fw, 3, d)                   tokens.embed.video.proj.weight (d, 3, ft, fh, fw)
embedding_spectrogram/kernel (fh, fw, 3, d)           tokens.embed.audio.proj.weight (d, 1, fh, fw),
                                                      channel-summed (input tiled to 3 channels)
cls, clsspectrogram (1, 1, d)                         tokens.cls_token.video / .audio
Transformer/posembed_input[_spectrogram]/...          tokens.pos_embed.video / .audio (1, 1 + N, d)
bottleneck (1, n + 1, d)                              bottleneck (num_bottlenecks = n, extra token on)
Transformer/encoderblock_{l}                          blocks.video.{l} (blocks.shared.{l} if shared)
Transformer/encoderblock_{l}_spectrogram              blocks.audio.{l}
Transformer/encoder_norm                              norm
output_projection (d, C)                              head (C, d)
====================================================  =================================================

Fusion: a ``bottleneck`` parameter means ``use_bottleneck`` (fusion='bottleneck'); otherwise
shared weights mean scenic's concatenation (fusion='concat') and per-modality weights its
"vanilla" cross-attention (fusion='xattn').

Unimodal checkpoints (``modality_fusion=('spectrogram',)`` or ``('rgb',)``: the released
"Spec-only" / "RGB-only" models) become one-stream avfusion models (``modalities=('audio',)`` or
``('video',)``, ``fusion_layer = depth``). Flax creates parameters only for the modules it calls,
so such a checkpoint holds only its own modality's embedding and position embedding; its CLS
token is ``cls`` for either modality (scenic drops the modality suffix when there is one); its
blocks are ``encoderblock_{l}`` (RGB, or a spectrogram model with share_encoder=True, which runs
the RGB-named blocks) or ``encoderblock_{l}_spectrogram``; all map to ``blocks.<modality>.{l}``.
A ``bottleneck`` parameter (use_bottleneck=True in the config) is never used with one modality
and is dropped. The fusion layer does nothing for one modality and is not needed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from avfusion.convert.keymaps import ParamReader, conv2d, conv3d, dense, flax_block, fold_rgb_to_one_channel, t
from avfusion.convert.safe_load import flatten_tree, load_flax_msgpack
from avfusion.errors import ConfigError, InputError
from avfusion.fusion import StreamFusion
from avfusion.core.config import ModelConfig, PreprocessConfig

__all__ = ["ScenicMBTLayout", "conversion_notes", "convert_scenic_mbt", "convert_scenic_mbt_with_notes", "infer_layout", "scenic_mbt_config",
           "scenic_mbt_params", "scenic_mbt_state_dict"]

# MBT's AudioSet inputs (scenic configs/audioset): 32 frames of 224 x 224, 800 x 128 log-mel.
DEFAULT_NUM_FRAMES = 32
DEFAULT_IMAGE_SIZE = (224, 224)
DEFAULT_SPEC_SIZE = (800, 128)

_BLOCK_RE = re.compile(r"^Transformer/encoderblock_(\d+)(_spectrogram)?/")


@dataclass(frozen=True)
class ScenicMBTLayout:
    """What the parameter shapes of a scenic MBT checkpoint say about the model."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    tubelet: tuple[int, int, int] | None  # (ft, fh, fw); None = no RGB stream
    spec_patch: tuple[int, int] | None  # (time, mel) = scenic's (fh, fw); None = no spectrogram stream
    num_video_tokens: int  # without CLS; 0 = no RGB stream
    num_audio_tokens: int
    shared: bool  # share_encoder (a spectrogram-only model with it runs the RGB-named blocks)
    bottleneck_tokens: int | None  # length of the `bottleneck` parameter; None = no bottleneck
    num_classes: int
    # avfusion names of the checkpoint's modalities: ('audio', 'video'), or one of them for a
    # unimodal checkpoint (modality_fusion=('spectrogram',) / ('rgb',))
    modalities: tuple[str, ...] = ("audio", "video")

    @property
    def unimodal(self) -> bool:
        return len(self.modalities) == 1


def scenic_mbt_params(tree: dict[str, Any]) -> dict[str, Any]:
    """The PARAMS tree of a scenic train state: ``optimizer/target`` (older) or ``params`` (newer)."""
    node = tree
    for _ in range(3):  # train state -> params (-> flax's own 'params' collection)
        if "Transformer" in node:
            return node
        if isinstance(node.get("optimizer"), dict) and isinstance(node["optimizer"].get("target"), dict):
            node = node["optimizer"]["target"]
        elif isinstance(node.get("params"), dict):
            node = node["params"]
        else:
            break
    if "Transformer" in node:
        return node
    raise InputError(
        "not a scenic MBT checkpoint: no 'Transformer' parameters under 'optimizer/target' or "
        f"'params' (top-level keys: {sorted(tree)[:12]})"
    )


def _shape(flat: dict[str, np.ndarray], key: str) -> tuple[int, ...]:
    if key not in flat:
        raise InputError(f"not a scenic MBT checkpoint (or an unsupported variant): parameter {key!r} is missing")
    return tuple(np.shape(flat[key]))


def infer_layout(flat: dict[str, np.ndarray]) -> ScenicMBTLayout:
    """Read every size from the shapes of a flat ``'a/b' -> array`` PARAMS mapping."""
    if "pre_logits/kernel" in flat:
        raise InputError("checkpoint has a 'pre_logits' layer (representation_size is set): "
                         "avfusion's MBT has no pre-logits layer, so it cannot be converted exactly")
    has_rgb, has_spec = "embedding/kernel" in flat, "embedding_spectrogram/kernel" in flat
    if not has_rgb and not has_spec:
        raise InputError("not a scenic MBT checkpoint (or an unsupported variant): neither 'embedding/kernel' (RGB) "
                         "nor 'embedding_spectrogram/kernel' (spectrogram) is present")
    unimodal = has_rgb != has_spec
    cls_names = ("cls",) if unimodal else ("cls", "clsspectrogram")
    if not any(c in flat for c in cls_names):
        raise InputError(f"checkpoint has no CLS token{'s' if len(cls_names) > 1 else ''} "
                         f"({', '.join(repr(c) for c in cls_names)}): it was trained with "
                         "classifier='gap' / 'gmp' / 'gsp' (pooling over all tokens) or '0', which avfusion's MBT "
                         "head does not implement; only classifier='token' (the released MBT models) is supported")
    if unimodal and "clsspectrogram" in flat:
        raise InputError("unsupported scenic MBT checkpoint: it has one modality's embedding "
                         f"({'RGB' if has_rgb else 'spectrogram'} only) but a 'clsspectrogram' token, which scenic "
                         "creates only for an RGB+spectrogram model; the checkpoint looks edited or truncated")
    d = None
    tubelet = spec_patch = None
    if has_rgb:
        emb = _shape(flat, "embedding/kernel")
        if len(emb) != 5:
            raise InputError(f"'embedding/kernel' has shape {emb}; a 3D tubelet kernel (ft, fh, fw, 3, d) "
                             "is expected (scenic temporal_encoding '3d_conv')")
        ft, fh, fw, _, d = emb
        tubelet = (ft, fh, fw)
    if has_spec:
        spec = _shape(flat, "embedding_spectrogram/kernel")
        if len(spec) != 4 or (d is not None and spec[-1] != d):
            raise InputError(f"'embedding_spectrogram/kernel' has shape {spec}; expected (fh, fw, Cin, "
                             f"{d if d is not None else 'd'})")
        d = spec[-1]
        spec_patch = (spec[0], spec[1])

    rgb_layers, spec_layers = set(), set()
    for key in flat:
        m = _BLOCK_RE.match(key)
        if m:
            (spec_layers if m.group(2) else rgb_layers).add(int(m.group(1)))
    if unimodal and has_rgb and spec_layers:
        raise InputError(f"unsupported scenic MBT checkpoint: RGB only (no spectrogram embedding) but it has "
                         f"spectrogram encoder blocks {sorted(spec_layers)} ('encoderblock_{{l}}_spectrogram')")
    if unimodal and has_spec and rgb_layers and spec_layers:
        raise InputError("unsupported scenic MBT checkpoint: spectrogram only, but it has both RGB-named "
                         "('encoderblock_{l}') and spectrogram ('encoderblock_{l}_spectrogram') encoder blocks; "
                         "a spectrogram-only scenic model runs one of the two (share_encoder=True: the RGB-named)")
    if unimodal and has_spec:
        # share_encoder=False: its own blocks; share_encoder=True: the RGB-named blocks
        layers, suffix, shared = (spec_layers, "_spectrogram", False) if spec_layers else (rgb_layers, "", True)
    else:
        layers, suffix, shared = rgb_layers, "", not spec_layers
    depth = len(layers)
    if depth == 0 or layers != set(range(depth)):
        raise InputError(f"encoder blocks are not numbered 0..L-1: found {sorted(layers)}")
    if not unimodal and spec_layers and spec_layers != rgb_layers:
        raise InputError(f"spectrogram blocks {sorted(spec_layers)} do not match RGB blocks {sorted(rgb_layers)}")

    q = _shape(flat, f"Transformer/encoderblock_0{suffix}/MultiHeadDotProductAttention_0/query/kernel")  # (d, h, k)
    if len(q) != 3 or q[0] != d or q[1] * q[2] != d:
        raise InputError(f"attention query kernel has shape {q}; expected (d={d}, heads, d/heads)")
    mlp = _shape(flat, f"Transformer/encoderblock_0{suffix}/MlpBlock_0/Dense_0/kernel")
    # minus the CLS slot
    n_rgb = _shape(flat, "Transformer/posembed_input/pos_embedding")[1] - 1 if has_rgb else 0
    n_spec = _shape(flat, "Transformer/posembed_input_spectrogram/pos_embedding")[1] - 1 if has_spec else 0
    head = _shape(flat, "output_projection/kernel")
    return ScenicMBTLayout(
        embed_dim=d, depth=depth, num_heads=q[1], mlp_dim=mlp[1],
        tubelet=tubelet, spec_patch=spec_patch,
        num_video_tokens=n_rgb, num_audio_tokens=n_spec,
        shared=shared,
        bottleneck_tokens=_shape(flat, "bottleneck")[1] if "bottleneck" in flat else None,
        num_classes=head[1],
        modalities=tuple(m for m, present in (("audio", has_spec), ("video", has_rgb)) if present),
    )


def _check_sizes(layout: ScenicMBTLayout, num_frames: int, image_size: tuple[int, int],
                 spec_size: tuple[int, int]) -> None:
    """The token counts implied by the input sizes must equal the position-embedding lengths."""
    errors = []
    if "video" in layout.modalities:
        errors += _check_video_sizes(layout, num_frames, image_size)
    if "audio" in layout.modalities:
        errors += _check_audio_sizes(layout, spec_size)
    if errors:
        raise ConfigError("input sizes do not match the checkpoint: " + "; ".join(errors))


def _check_video_sizes(layout: ScenicMBTLayout, num_frames: int, image_size: tuple[int, int]) -> list[str]:
    assert layout.tubelet is not None
    ft, fh, fw = layout.tubelet
    H, W = image_size
    errors = []
    if num_frames % ft or H % fh or W % fw:
        errors.append(f"video {num_frames} x {H} x {W} is not divisible by the tubelet {layout.tubelet}")
    else:
        n = (num_frames // ft) * (H // fh) * (W // fw)
        if n != layout.num_video_tokens:
            per_frame = (H // fh) * (W // fw)
            hint = (f"; with --image-size {H} {W} that is --num-frames {layout.num_video_tokens // per_frame * ft}"
                    if layout.num_video_tokens % per_frame == 0 else "")
            errors.append(f"--num-frames {num_frames} --image-size {H} {W} give {n} video tokens but the RGB "
                          f"position embedding has {layout.num_video_tokens} (T/{ft} x H/{fh} x W/{fw} must equal "
                          f"{layout.num_video_tokens}){hint}")
    return errors


def _check_audio_sizes(layout: ScenicMBTLayout, spec_size: tuple[int, int]) -> list[str]:
    assert layout.spec_patch is not None
    errors = []
    pt, pf = layout.spec_patch
    T, F = spec_size
    if T % pt or F % pf:
        errors.append(f"spectrogram {T} x {F} is not divisible by the patch {layout.spec_patch}")
    else:
        n = (T // pt) * (F // pf)
        if n != layout.num_audio_tokens:
            per_row = F // pf
            hint = (f"; with {F} mel bins that is --spec-size {layout.num_audio_tokens // per_row * pt} {F}"
                    if layout.num_audio_tokens % per_row == 0 else "")
            errors.append(f"--spec-size {T} {F} gives {n} spectrogram tokens but the spectrogram position "
                          f"embedding has {layout.num_audio_tokens}{hint}")
    return errors


def scenic_mbt_config(
    layout: ScenicMBTLayout,
    fusion_layer: int | None,
    num_frames: int | None = None,
    image_size: tuple[int, int] | None = None,
    spec_size: tuple[int, int] | None = None,
    name: str = "mbt_scenic",
    class_names: list[str] | None = None,
    test_with_bottlenecks: bool = True,
) -> ModelConfig:
    """The avfusion ModelConfig of a scenic MBT checkpoint with this layout.

    ``test_with_bottlenecks`` is scenic's option of that name (True in the released config): False
    runs a bottleneck model unimodally in eval mode. ``fusion_layer`` is required for an
    RGB+spectrogram checkpoint and ignored for a unimodal one (which gets ``fusion_layer = depth``:
    every layer unimodal). Sizes of a modality the checkpoint lacks are stored but unused."""
    num_frames = DEFAULT_NUM_FRAMES if num_frames is None else int(num_frames)
    image_size = tuple(image_size or DEFAULT_IMAGE_SIZE)  # type: ignore[assignment]
    spec_size = tuple(spec_size or DEFAULT_SPEC_SIZE)  # type: ignore[assignment]
    _check_sizes(layout, num_frames, image_size, spec_size)  # type: ignore[arg-type]
    common = dict(
        name=name, family="streams", num_classes=layout.num_classes, class_names=class_names,
        embed_dim=layout.embed_dim, depth=layout.depth, num_heads=layout.num_heads, mlp_dim=layout.mlp_dim,
        qkv_bias=True, ln_eps=1e-6, gelu="tanh",  # flax LayerNorm default eps, flax.linen.gelu (tanh)
        num_frames=num_frames, image_size=image_size, spec_size=spec_size,
        test_with_bottlenecks=test_with_bottlenecks,
        head_zero_init=True,
        # MBT AudioSet preprocessing (fbank, mean 1.102 / std 2.762, frames in [-1, 1]) at this mel count
        preprocess=PreprocessConfig(num_mel_bins=spec_size[1]),
    )
    if layout.tubelet is not None:
        common["tubelet"] = layout.tubelet
    if layout.spec_patch is not None:
        common["spec_patch"] = layout.spec_patch
    if layout.unimodal:
        # One stream through every layer (scenic: len(modality_fusion) == 1 never fuses); weights
        # are that stream's own whatever scenic named them, so share_weights is False.
        return ModelConfig(modalities=layout.modalities, fusion="bottleneck", share_weights=False,
                           fusion_layer=layout.depth, **common)  # type: ignore[arg-type]
    if fusion_layer is None:
        raise ConfigError("--fusion-layer is required for an RGB+spectrogram checkpoint: it is scenic's "
                         "model.fusion_layer (behaviour, not visible in parameter shapes); the released "
                         "AudioSet MBT uses 8")
    if not 0 <= fusion_layer <= layout.depth:
        raise ConfigError(f"--fusion-layer must be in [0, {layout.depth}] for this {layout.depth}-layer checkpoint, "
                         f"got {fusion_layer}")
    if layout.bottleneck_tokens is not None:
        fusion = "bottleneck"
    else:
        fusion = "concat" if layout.shared else "xattn"
    return ModelConfig(
        fusion=fusion, share_weights=layout.shared, fusion_layer=fusion_layer,
        # scenic's 'token' classifier adds one bottleneck token to config.n_bottlenecks
        num_bottlenecks=(layout.bottleneck_tokens - 1) if layout.bottleneck_tokens else 0,
        bottleneck_extra_token=layout.bottleneck_tokens is not None,
        **common,  # type: ignore[arg-type]
    )


def scenic_mbt_state_dict(flat: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Map a flat PARAMS mapping onto the avfusion state dict of ``cfg``; every parameter must be used."""
    r = ParamReader(flat, "scenic MBT checkpoint")
    mods = cfg.modalities
    unimodal = len(mods) == 1
    sd: dict[str, torch.Tensor] = {
        "norm.weight": t(r.get("Transformer/encoder_norm/scale")),
        "norm.bias": t(r.get("Transformer/encoder_norm/bias")),
        "head.weight": dense(r.get("output_projection/kernel", ndim=2)),  # (C, d)
        "head.bias": t(r.get("output_projection/bias")),
    }
    if "video" in mods:
        sd.update({
            "tokens.embed.video.proj.weight": conv3d(r.get("embedding/kernel", ndim=5)),  # (d, 3, ft, fh, fw)
            "tokens.embed.video.proj.bias": t(r.get("embedding/bias")),
            "tokens.cls_token.video": t(r.get("cls", ndim=3)),
            "tokens.pos_embed.video": t(r.get("Transformer/posembed_input/pos_embedding", ndim=3)),
        })
    if "audio" in mods:
        sd.update({
            # (d, Cin, fh, fw) -> (d, 1, fh, fw): scenic feeds the 1-channel spectrogram tiled to Cin channels
            "tokens.embed.audio.proj.weight": fold_rgb_to_one_channel(
                conv2d(r.get("embedding_spectrogram/kernel", ndim=4))),
            "tokens.embed.audio.proj.bias": t(r.get("embedding_spectrogram/bias")),
            # with one modality scenic names the CLS token 'cls' whatever the modality
            "tokens.cls_token.audio": t(r.get("cls" if unimodal else "clsspectrogram", ndim=3)),
            "tokens.pos_embed.audio": t(r.get("Transformer/posembed_input_spectrogram/pos_embedding", ndim=3)),
        })
    if "bottleneck" in r:
        bottleneck = t(r.get("bottleneck", ndim=3))
        # A late-fusion model (fusion_layer == depth) never uses its bottleneck and avfusion's
        # has none; neither does a unimodal one. The checkpoint's is read (so it is not reported
        # as unmapped) and left out.
        if not unimodal and cfg.fusion == "bottleneck" and cfg.fusion_layer < cfg.depth:
            sd["bottleneck"] = bottleneck
    if cfg.share_weights:
        streams = {"shared": ""}
    elif unimodal:
        # RGB: encoderblock_{l}; spectrogram: encoderblock_{l}_spectrogram, or the RGB-named blocks
        # when it was trained with share_encoder=True (the checkpoint then has only those)
        spec_own = any(k.startswith("Transformer/encoderblock_0_spectrogram/") for k in flat)
        streams = {mods[0]: "_spectrogram" if mods[0] == "audio" and spec_own else ""}
    else:
        streams = {"video": "", "audio": "_spectrogram"}
    for layer in range(cfg.depth):
        for stream, suffix in streams.items():
            block = flax_block(r, f"Transformer/encoderblock_{layer}{suffix}")
            sd.update({f"blocks.{stream}.{layer}.{k}": v for k, v in block.items()})
    leftover = r.unused()
    if leftover:
        raise InputError(f"scenic MBT checkpoint has parameters this converter does not map: {leftover[:10]}"
                         + (f" (+{len(leftover) - 10} more)" if len(leftover) > 10 else ""))
    return sd


def conversion_notes(layout: ScenicMBTLayout, fusion_layer: int | None) -> list[str]:
    """What the conversion left out or ignored, in words (the CLI prints these)."""
    notes = []
    if layout.unimodal:
        m = layout.modalities[0]
        scenic = "spectrogram" if m == "audio" else "rgb"
        notes.append(f"unimodal checkpoint (modality_fusion=('{scenic}',)): one {m} stream through all "
                     f"{layout.depth} layers, logits = the {m} head")
        if layout.shared and m == "audio":
            notes.append("share_encoder=True: the spectrogram ran scenic's RGB-named blocks encoderblock_{l}, "
                         "loaded as the audio stream")
        if layout.bottleneck_tokens is not None:
            notes.append(f"'bottleneck' parameter ({layout.bottleneck_tokens} tokens, use_bottleneck=True) dropped: "
                         "scenic never uses it with one modality")
        if fusion_layer is not None and fusion_layer != layout.depth:
            notes.append(f"--fusion-layer {fusion_layer} ignored: a unimodal model has no fusion "
                         f"(stored as fusion_layer={layout.depth})")
    elif layout.bottleneck_tokens is not None and fusion_layer is not None and fusion_layer >= layout.depth:
        notes.append(f"'bottleneck' parameter dropped: late fusion (fusion layer {fusion_layer} = depth) never uses it")
    return notes


def convert_scenic_mbt_with_notes(
    checkpoint: str | os.PathLike | dict[str, Any],
    fusion_layer: int | None = None,
    num_frames: int | None = None,
    image_size: tuple[int, int] | None = None,
    spec_size: tuple[int, int] | None = None,
    name: str = "mbt_scenic",
    class_names: list[str] | None = None,
    test_with_bottlenecks: bool = True,
) -> tuple[StreamFusion, list[str]]:
    """``convert_scenic_mbt`` that also returns ``conversion_notes`` (what was dropped or ignored)."""
    tree = load_flax_msgpack(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    flat = flatten_tree(scenic_mbt_params(tree))
    layout = infer_layout(flat)
    cfg = scenic_mbt_config(layout, fusion_layer, num_frames, image_size, spec_size, name, class_names,
                            test_with_bottlenecks)
    model = StreamFusion(cfg)  # scenic's MBT is the streams family (cfg.family == 'streams')
    sd = scenic_mbt_state_dict(flat, cfg)
    own = model.state_dict()
    for k, v in sd.items():  # shapes were inferred from the same tensors; this guards the mapping
        if k not in own or own[k].shape != v.shape:
            raise AssertionError(f"converter bug: {k!r} {tuple(v.shape)} vs model "
                                 f"{tuple(own[k].shape) if k in own else 'absent'}")
    model.load_state_dict(sd, strict=True)
    return model.eval(), conversion_notes(layout, fusion_layer)


def convert_scenic_mbt(
    checkpoint: str | os.PathLike | dict[str, Any],
    fusion_layer: int | None = None,
    num_frames: int | None = None,
    image_size: tuple[int, int] | None = None,
    spec_size: tuple[int, int] | None = None,
    name: str = "mbt_scenic",
    class_names: list[str] | None = None,
    test_with_bottlenecks: bool = True,
) -> StreamFusion:
    """Load a scenic MBT checkpoint (path to a flax msgpack, or its decoded tree) as an avfusion
    model in eval mode. Inputs: video (B, 3, T, H, W) = official NTHWC permuted, in [-1, 1];
    audio (B, time, mel) = the official spectrogram before it is tiled to 3 channels.

    ``fusion_layer`` is required for an RGB+spectrogram checkpoint; a unimodal one (Spec-only /
    RGB-only) ignores it and gives a one-stream model (``modalities=('audio',)`` / ``('video',)``)."""
    model, _ = convert_scenic_mbt_with_notes(checkpoint, fusion_layer, num_frames, image_size, spec_size, name,
                                             class_names, test_with_bottlenecks)
    return model
