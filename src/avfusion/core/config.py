"""Typed model configuration: everything needed to rebuild a model and its preprocessing.

A model directory's ``config.json`` is ``ModelConfig.to_dict()``; ``ModelConfig.from_dict``
rebuilds it (unknown keys are an error, so a typo never passes silently).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from avfusion.errors import ConfigError
from avfusion.heads.readout import OUTPUTS, readout_outputs
from avfusion.layers.attention import ATTN_IMPLS
from avfusion.layers.windows import stage_grids
from avfusion.utils.dataclass_config import coerce_scalar

MODALITIES: tuple[str, ...] = ("audio", "video")

# Fusion schemes per family (DESIGN.md section 3).
STREAM_FUSIONS = ("bottleneck", "xattn", "concat")  # family "streams": MBT and scenic's variants
MASKED_FUSIONS = ("zorro", "bottleneck_mask", "all", "unimodal")  # family "masked": Zorro + ablations
# Zorro's routing on hierarchical backbones (docs/zorro_swin_hip.md): Swin and Hierarchical Perceiver.
HIERARCHICAL_FAMILIES = ("swin", "hip")
FAMILIES = ("streams", "masked", *HIERARCHICAL_FAMILIES)


# Log-mel normalisation presets: name -> (mean, std, multiplier); features are
# (x - mean) / (multiplier * std) (docs/data.md section 4).
AUDIO_NORM_PRESETS: dict[str, tuple[float, float, float]] = {
    "mbt": (1.102, 2.762, 1.0),  # MBT's AudioSet statistics
    "ast": (-4.2677393, 4.5689974, 2.0),  # AST's AudioSet statistics, divided by 2 * std as AST does
    "none": (0.0, 1.0, 1.0),  # the log-mel as it is
}
# What a config.json stored for audio_mean / audio_std whatever the preset, before they became
# optional overrides; "none" ignored them then, so it ignores exactly these now.
_OLD_DEFAULT_STATS = (1.102, 2.762)


@dataclass
class PreprocessConfig:
    """How raw clips become model inputs; travels with the weights (DESIGN.md section 5).

    Defaults are MBT's AudioSet setting: Kaldi fbank (25 ms Hann window, 10 ms shift, 128 HTK
    mel bins, no dither), normalised by the ``mbt`` preset (mean 1.102, std 2.762); frames in
    scenic's [-1, 1].

    ``audio_norm`` names a preset of :data:`AUDIO_NORM_PRESETS`, which gives the mean, the std and
    the multiplier; ``audio_mean`` / ``audio_std`` override the preset's mean / std (None: the
    preset's). An override equal to the preset's own number is stored as None, so a config that
    spelled out its preset's numbers (every config.json written before they were optional) reads
    as the plain preset, and computes exactly the numbers it did.
    """

    sample_rate: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    audio_norm: str = "mbt"  # a preset of AUDIO_NORM_PRESETS: mbt, ast or none
    audio_mean: float | None = None  # None: the preset's mean
    audio_std: float | None = None  # None: the preset's std (ast still divides by 2 x std)
    fps: float = 25.0
    frame_stride: int = 2  # take every 2nd frame at `fps`
    video_norm: str = "scenic"  # [-1, 1]; "imagenet" for ImageNet mean / std
    short_side: int = 256  # resize before cropping

    def __post_init__(self) -> None:
        if self.audio_norm not in AUDIO_NORM_PRESETS:
            raise ConfigError(f"unknown audio_norm {self.audio_norm!r} (preprocess.audio_norm); presets: "
                              f"{sorted(AUDIO_NORM_PRESETS)}")
        mean, std, _ = AUDIO_NORM_PRESETS[self.audio_norm]
        for key, preset in (("audio_mean", mean), ("audio_std", std)):
            v = getattr(self, key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (
                    key == "audio_std" and v <= 0):
                what = "a finite number > 0" if key == "audio_std" else "a finite number"
                raise ConfigError(f"preprocess.{key} must be {what}, or null for the {self.audio_norm!r} preset's "
                                  f"{preset}; got {v!r}")
            setattr(self, key, None if v == preset else float(v))
        if self.audio_norm == "none" and (self.audio_mean, self.audio_std) == _OLD_DEFAULT_STATS:
            self.audio_mean = self.audio_std = None
        if self.audio_norm == "none" and (self.audio_mean, self.audio_std) != (None, None):
            raise ConfigError(f"preprocess.audio_norm='none' leaves the log-mel as it is, but preprocess.audio_mean="
                              f"{self.audio_mean} / audio_std={self.audio_std} are set: remove them, or name a "
                              f"preset ({', '.join(p for p in AUDIO_NORM_PRESETS if p != 'none')})")

    def audio_stats(self) -> tuple[float, float]:
        """(mean, divisor): normalised features are ``(log_mel - mean) / divisor``."""
        mean, std, multiplier = AUDIO_NORM_PRESETS[self.audio_norm]
        if self.audio_mean is not None:
            mean = self.audio_mean
        if self.audio_std is not None:
            std = self.audio_std
        return mean, std * multiplier


@dataclass
class ModelConfig:
    """Architecture, sizes, classes and preprocessing of one model.

    Families:
      - ``streams``: one transformer stack per modality (or one shared with ``share_weights``);
        ``fusion`` is how streams meet from ``fusion_layer`` on: ``bottleneck`` (MBT),
        ``xattn`` (scenic's "vanilla" cross-attention mid fusion) or ``concat`` (shared weights,
        all tokens attend to all). ``fusion_layer == depth`` is late fusion.
      - ``masked``: one stack with shared weights over [audio; video; fusion tokens]; ``fusion``
        names the routing rule used from ``fusion_layer`` on (``zorro``, ``bottleneck_mask``,
        ``all`` = input-level fusion, ``unimodal`` = independent streams), then Zorro's readout.
      - ``swin`` / ``hip``: Zorro's routing (``fusion='zorro'`` from the first block) on a Swin-style
        or Hierarchical Perceiver backbone, with ``depths`` per stage (docs/zorro_swin_hip.md).
    """

    name: str = "custom"
    family: str = "streams"
    # The modalities the model has streams for; one modality gives a unimodal baseline
    # (the released MBT "Spec-only" / "RGB-only" models; the demo's audio-only / video-only models).
    modalities: tuple[str, ...] = MODALITIES
    fusion: str = "bottleneck"
    share_weights: bool = False
    # classes; task says how scores read: "multilabel" (sigmoid), "single" or "multihead" (softmax)
    task: str = "multilabel"
    num_classes: int = 527
    class_names: list[str] | None = None
    class_splits: dict[str, int] | None = None  # multi-head tasks, e.g. {"verb": 97, "noun": 300}
    # transformer (ViT-B by default)
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    qkv_bias: bool = True
    ln_eps: float = 1e-6  # official MBT / flax
    gelu: str = "tanh"  # flax's default GELU is the tanh approximation; "none" = exact erf
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    # inputs
    num_frames: int = 32
    image_size: tuple[int, int] = (224, 224)
    tubelet: tuple[int, int, int] = (2, 16, 16)  # (t, h, w)
    spec_size: tuple[int, int] = (800, 128)  # (time frames, mel bins)
    spec_patch: tuple[int, int] = (16, 16)  # (time, mel)
    # fusion
    fusion_layer: int = 8
    num_bottlenecks: int = 4
    # scenic adds one more bottleneck token when the classifier is 'token'; we follow the
    # official code so released checkpoints load (docs/models.md).
    bottleneck_extra_token: bool = True
    # scenic's test_with_bottlenecks: False runs bottleneck models unimodally in eval mode.
    test_with_bottlenecks: bool = True
    num_fusion_tokens: int = 8
    eval_output: str = "fusion"  # masked family: which readout output `logits` reports
    head_zero_init: bool = True  # scenic initialises the classifier to zeros
    attn_impl: str = "auto"  # auto | dense | split | flex (layers/attention.py)
    # hierarchical backbones (families "swin" and "hip"); ``depth`` is derived as sum(depths)
    depths: tuple[int, ...] | None = None  # blocks per stage
    window_size: tuple[int, int, int] = (8, 7, 7)  # swin: video window (t, h, w), in tokens
    spec_window: tuple[int, int] = (5, 8)  # swin: spectrogram window (time, mel), in tokens
    stage_dims: tuple[int, ...] | None = None  # hip: latent width per stage
    num_latents: tuple[int, ...] | None = None  # hip: latents per modality group per stage
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        # Overrides and config.json come from users: shapes are checked here, before anything is
        # built, so a bad value is a ConfigError naming its key rather than a TypeError deep down.
        if isinstance(self.modalities, str):
            self.modalities = (self.modalities,)  # "modalities=audio" on the command line
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown:
            raise self._bad(f"modalities must be among {MODALITIES}, got {list(self.modalities)}")
        self.modalities = tuple(m for m in MODALITIES if m in self.modalities)  # canonical order
        for key, n in _SIZE_TUPLES.items():
            setattr(self, key, self._sizes(key, getattr(self, key), n))
        for key in ("depths", "stage_dims", "num_latents"):
            if getattr(self, key) is not None:
                setattr(self, key, self._sizes(key, getattr(self, key), None))
        if self.family in HIERARCHICAL_FAMILIES and self.depths:
            self.depth = sum(self.depths)
        if isinstance(self.preprocess, dict):
            self.preprocess = PreprocessConfig(**_checked_kwargs(PreprocessConfig, self.preprocess))
        elif not isinstance(self.preprocess, PreprocessConfig):
            raise self._bad(f"preprocess must be a mapping of its keys, got {self.preprocess!r}")
        if self.class_splits is not None:
            if not isinstance(self.class_splits, dict) or not all(
                    isinstance(v, int) and v > 0 for v in self.class_splits.values()):
                raise self._bad(f"class_splits must map head names to class counts, e.g. {{verb: 97, noun: 300}}, "
                                f"got {self.class_splits!r}")
            self.class_splits = dict(self.class_splits)
            total = sum(self.class_splits.values())
            if total != self.num_classes:
                raise self._bad(f"class_splits {self.class_splits} sum to {total}, but num_classes is "
                                f"{self.num_classes}; set both")
        self.validate()

    def _bad(self, msg: str) -> ConfigError:
        return ConfigError(f"model config {self.name!r}: {msg}")

    def _sizes(self, key: str, value: Any, n: int | None) -> tuple[int, ...]:
        """``value`` as a tuple of ``n`` (any number if None) positive ints, or a ConfigError."""
        ok = isinstance(value, (list, tuple)) and (n is None or len(value) == n) and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
        if not ok:
            what = f"{n} positive integers" if n else "a list of positive integers"
            raise self._bad(f"{key} must be {what}, e.g. {key}=[{', '.join(['8'] * (n or 2))}], got {value!r}")
        return tuple(value)

    def validate(self) -> None:
        bad = self._bad

        small = {k: v for k in ("embed_dim", "num_heads", "mlp_dim", "num_frames") if (v := getattr(self, k)) < 1}
        if small or self.depth < 0:
            raise bad(f"embed_dim, num_heads, mlp_dim and num_frames must be >= 1 and depth >= 0, got "
                      f"{small or {'depth': self.depth}}")
        if self.family not in FAMILIES:
            raise bad(f"family must be one of {FAMILIES}, got {self.family!r}")
        if not self.modalities:
            raise bad(f"modalities must name at least one of {MODALITIES}")
        if len(self.modalities) == 1 and self.family != "streams":
            raise bad("a unimodal model is built by the 'streams' family (one stream, no fusion)")
        allowed = {"streams": STREAM_FUSIONS, "masked": MASKED_FUSIONS}.get(self.family, ("zorro",))
        if self.fusion not in allowed:
            raise bad(f"fusion for family {self.family!r} must be one of {allowed}, got {self.fusion!r}")
        if self.family == "streams" and self.fusion == "concat" and not self.share_weights:
            raise bad("fusion='concat' runs all tokens through one block: it needs share_weights=True")
        if not 0 <= self.fusion_layer <= self.depth:
            raise bad(f"fusion_layer must be in [0, depth={self.depth}], got {self.fusion_layer}")
        if self.embed_dim % self.num_heads:
            raise bad(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.num_bottlenecks < 0 or self.num_fusion_tokens < 0 or self.num_classes < 1:
            raise bad("num_bottlenecks and num_fusion_tokens must be >= 0 and num_classes >= 1")
        rates = {k: getattr(self, k) for k in ("drop_rate", "attn_drop_rate", "drop_path_rate")}
        if not all(0.0 <= r < 1.0 for r in rates.values()):
            raise bad(f"dropout rates must be in [0, 1), got {rates}")
        video = (self.num_frames, *self.image_size)
        if "video" in self.modalities and any(s % p for s, p in zip(video, self.tubelet)):
            raise bad(f"num_frames x image_size {video} must be multiples of tubelet {self.tubelet}")
        if "audio" in self.modalities and any(s % p for s, p in zip(self.spec_size, self.spec_patch)):
            raise bad(f"spec_size {self.spec_size} must be a multiple of spec_patch {self.spec_patch}")
        if self.family == "streams" and self.fusion == "bottleneck" and self.fusion_layer < self.depth:
            if self.num_bottlenecks + int(self.bottleneck_extra_token) == 0:
                raise bad("bottleneck fusion needs at least one bottleneck token")
        if self.family == "masked" and self.fusion != "unimodal" and self.num_fusion_tokens == 0:
            if self.fusion in ("zorro", "bottleneck_mask"):
                raise bad(f"fusion={self.fusion!r} needs num_fusion_tokens >= 1")
        if self.family in HIERARCHICAL_FAMILIES:
            if not self.depths or min(self.depths) < 1:
                raise bad(f"family {self.family!r} needs depths (blocks per stage, each >= 1), got {self.depths}")
            if self.fusion_layer != 0 or self.num_fusion_tokens < 1:
                raise bad(f"family {self.family!r} fuses from the first block: fusion_layer=0, num_fusion_tokens >= 1")
            if self.family == "hip" and not (self.stage_dims and self.num_latents
                                             and len(self.stage_dims) == len(self.num_latents) == len(self.depths)):
                raise bad("family 'hip' needs stage_dims and num_latents, one entry per stage of depths")
        if self.task not in ("multilabel", "single", "multihead"):
            raise bad(f"task must be multilabel, single or multihead, got {self.task!r}")
        if (self.task == "multihead") != (self.class_splits is not None):
            raise bad("task 'multihead' goes with class_splits (and only it)")
        if self.spec_size[1] != self.preprocess.num_mel_bins:
            raise bad(f"spec_size {self.spec_size} has {self.spec_size[1]} mel bins but preprocess.num_mel_bins "
                      f"is {self.preprocess.num_mel_bins}; set both")
        if self.gelu not in ("tanh", "none"):
            raise bad(f"gelu must be 'tanh' or 'none', got {self.gelu!r}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise bad(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if self.attn_impl not in ATTN_IMPLS:
            raise bad(f"attn_impl must be one of {ATTN_IMPLS}, got {self.attn_impl!r}")
        self._validate_outputs()
        if self.family == "swin":
            self._validate_swin_grids()
        if self.family == "hip":
            head_dim = self.embed_dim // self.num_heads
            odd = [d for d in self.stage_dims or () if d % head_dim]
            if odd:
                raise bad(f"stage_dims {self.stage_dims}: widths {odd} are not multiples of the head width "
                          f"{head_dim} (embed_dim / num_heads)")

    def _validate_outputs(self) -> None:
        """eval_output names an output the model has (the Zorro family has no fusion output without
        fusion tokens; the streams family ignores the key, so only its vocabulary is checked)."""
        known = (*OUTPUTS, "mean")
        if self.eval_output not in known:
            raise self._bad(f"eval_output must be one of {known}, got {self.eval_output!r}")
        if self.family != "streams":
            outputs = readout_outputs(self.num_fusion_tokens)
            if self.eval_output not in (*outputs, "mean"):
                raise self._bad(f"eval_output={self.eval_output!r} names no output of this model: with "
                                f"num_fusion_tokens={self.num_fusion_tokens} its outputs are {outputs}; set "
                                f"eval_output to one of {(*outputs, 'mean')} or num_fusion_tokens >= 1")

    def _validate_swin_grids(self) -> None:
        """Every stage's grids divide into windows and merge 2 x 2 (Zorro-Swin builds the same grids)."""
        video = tuple(s // p for s, p in zip((self.num_frames, *self.image_size), self.tubelet))
        audio = tuple(s // p for s, p in zip(self.spec_size, self.spec_patch))
        grids = {"audio": audio, "video": video}
        windows = {"audio": self.spec_window, "video": self.window_size}
        try:
            stage_grids({m: grids[m] for m in self.modalities}, windows, len(self.depths or ()))
        except ValueError as e:
            raise self._bad(f"{e} (set window_size / spec_window, depths, or the input and patch sizes)") from None

    # -- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return cls(**_checked_kwargs(cls, d))

    def replace(self, **overrides: Any) -> "ModelConfig":
        """A copy with ``overrides`` applied; unknown keys raise with the list of valid ones."""
        d = self.to_dict()
        pre = dict(d.pop("preprocess"))
        for k, v in overrides.items():
            if k.startswith("preprocess."):
                key = k.split(".", 1)[1]
                _checked_kwargs(PreprocessConfig, {key: v})
                pre[key] = v
            elif k == "preprocess":  # a whole section: a PreprocessConfig or a dict of its keys
                if not isinstance(v, (PreprocessConfig, dict)):
                    raise ConfigError(f"preprocess must be a mapping of its keys, e.g. preprocess.fps=25, got {v!r}")
                pre.update(dataclasses.asdict(v) if isinstance(v, PreprocessConfig) else v)
            else:
                d[k] = v
        d["preprocess"] = pre
        return ModelConfig.from_dict(d)


# Fixed-length size fields: key -> number of entries.
_SIZE_TUPLES = {"image_size": 2, "tubelet": 3, "spec_size": 2, "spec_patch": 2, "window_size": 3, "spec_window": 2}


def _checked_kwargs(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} key(s) {unknown}; valid keys: {sorted(names)}")
    hints = typing.get_type_hints(cls)  # scalar fields checked / converted ("1e-3" -> 0.001)
    return {k: coerce_scalar(v, hints[k], k) for k, v in d.items()}
